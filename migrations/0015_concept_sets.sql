-- embstore catalog, version 15: similarity encoding per label set, on a recorded concept set
-- (issue 34). A result is keyed by its label set too (a THINGS run and an ImageNet run of one model
-- and reference are two results), and names the concept set it rests on (concept_sets: the label
-- set's classes, in order) and how the run chose it, so curves on different concept sets are
-- never overlaid unawares. concepts_sha (unchanged) still pairs resamples: reference + concepts.
-- Results stored before this version are imagenet1k's, with no recorded concept set (NULL).
CREATE TABLE concept_sets (
    concept_set   VARCHAR PRIMARY KEY,      -- sha256 of "label_set:i1,i2,..." (ordered label indices)
    label_set     VARCHAR NOT NULL,
    n             INTEGER NOT NULL,
    label_indices INTEGER[] NOT NULL,
    names         VARCHAR[] NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT now()
);

ALTER TABLE rsa_results RENAME TO rsa_results_v14;
CREATE TABLE rsa_results (
    model_key VARCHAR NOT NULL, layer VARCHAR NOT NULL, layer_order INTEGER NOT NULL,
    reference VARCHAR NOT NULL, label_set VARCHAR NOT NULL,
    concept_set VARCHAR,          -- concept_sets' key; NULL: stored before version 15
    concept_source VARCHAR,       -- how the run chose it: "covered by glove-6B-50d", "file mine.txt", "intersect …"
    n_concepts INTEGER NOT NULL, n_groups INTEGER NOT NULL,
    acc_2v2 DOUBLE NOT NULL, acc_groups DOUBLE[], acc_sd DOUBLE, acc_ci_low DOUBLE, acc_ci_high DOUBLE,
    eq1_mean DOUBLE, eq2_mean DOUBLE, p_value DOUBLE, n_permutations INTEGER NOT NULL,
    rsa_spearman DOUBLE NOT NULL, rsa_spearman_ci_low DOUBLE, rsa_spearman_ci_high DOUBLE,
    rsa_pearson DOUBLE NOT NULL, rsa_pearson_ci_low DOUBLE, rsa_pearson_ci_high DOUBLE,
    rsa_kendall_a DOUBLE, rsa_kendall_ci_low DOUBLE, rsa_kendall_ci_high DOUBLE,
    acc_1v2 DOUBLE, n_1v2 INTEGER NOT NULL, p_1v2 DOUBLE, p_1v2_perm DOUBLE, scope_1v2 VARCHAR,
    p_holm DOUBLE, p_bh DOUBLE, p_1v2_holm DOUBLE, p_1v2_bh DOUBLE,
    n_boot INTEGER, seed INTEGER NOT NULL, concepts_sha VARCHAR,
    computed_at TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, reference, label_set)
);
INSERT INTO rsa_results BY NAME SELECT *, 'imagenet1k' AS label_set, NULL::VARCHAR AS concept_set,
       NULL::VARCHAR AS concept_source FROM rsa_results_v14;
DROP TABLE rsa_results_v14;

ALTER TABLE rsa_resamples RENAME TO rsa_resamples_v14;
CREATE TABLE rsa_resamples (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    reference     VARCHAR NOT NULL,
    label_set     VARCHAR NOT NULL,
    acc_2v2       DOUBLE[] NOT NULL,
    rsa_spearman  DOUBLE[] NOT NULL,
    rsa_pearson   DOUBLE[] NOT NULL,
    rsa_kendall_a DOUBLE[] NOT NULL,        -- NaN where not computed (above 300 concepts)
    PRIMARY KEY (model_key, layer, reference, label_set)
);
INSERT INTO rsa_resamples BY NAME SELECT *, 'imagenet1k' AS label_set FROM rsa_resamples_v14;
DROP TABLE rsa_resamples_v14;

ALTER TABLE rsa_tests RENAME TO rsa_tests_v14;
CREATE TABLE rsa_tests (
    reference     VARCHAR NOT NULL,
    label_set     VARCHAR NOT NULL,
    model_a       VARCHAR NOT NULL,
    layer_a       VARCHAR NOT NULL,
    model_b       VARCHAR NOT NULL,
    layer_b       VARCHAR NOT NULL,
    measure       VARCHAR NOT NULL,         -- acc_2v2 | rsa_spearman | rsa_pearson | rsa_kendall_a
    n_concepts    INTEGER NOT NULL,
    concepts_sha  VARCHAR NOT NULL,
    value_a       DOUBLE NOT NULL,
    value_b       DOUBLE NOT NULL,
    delta         DOUBLE NOT NULL,          -- value_a - value_b
    ci_low        DOUBLE,
    ci_high       DOUBLE,
    p_value       DOUBLE,
    method        VARCHAR NOT NULL,
    n_boot        INTEGER NOT NULL,
    seed          INTEGER NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (reference, label_set, model_a, layer_a, model_b, layer_b, measure)
);
INSERT INTO rsa_tests BY NAME SELECT *, 'imagenet1k' AS label_set FROM rsa_tests_v14;
DROP TABLE rsa_tests_v14;

-- coverage of a label set's names by a word-vector space: how = name | synonym:… | hypernym:… | missing
-- (vec NULL where missing)
ALTER TABLE reference_vectors RENAME TO reference_vectors_v14;
CREATE TABLE reference_vectors (
    reference   VARCHAR NOT NULL,
    label_set   VARCHAR NOT NULL,
    label_index INTEGER NOT NULL,
    how         VARCHAR NOT NULL,
    vec         DOUBLE[],
    PRIMARY KEY (reference, label_set, label_index)
);
INSERT INTO reference_vectors BY NAME SELECT *, 'imagenet1k' AS label_set FROM reference_vectors_v14;
DROP TABLE reference_vectors_v14;
