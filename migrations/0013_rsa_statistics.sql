-- embstore catalog, version 13: the statistics of seed 004's claims (issue 33, part 3).
-- Per result: the 2 vs 2 accuracy of each image group (mean and SD across groups), the means of
-- Eq. 1 (matched correlations' sum) and Eq. 2 (mismatched) over pairs and groups, Kendall's τ-a
-- RSA, and 95 % percentile intervals from bootstrap resamples of the concepts (the whole method
-- re-run on each; a concept is never paired with its own copy), whose count and seed are recorded
-- with a fingerprint of the concept list (same concepts + seed + count = the same resamples, so
-- two results can be compared pair by pair). The 1 vs 2 test gets a permutation p (the reference's
-- concepts permuted) beside its binomial one, and its scope: all images, or within each group.
-- NULL: computed before this version, or not computed (n_boot = 0; τ-a interval above 300 concepts).
ALTER TABLE rsa_results ADD COLUMN acc_groups DOUBLE[];
ALTER TABLE rsa_results ADD COLUMN acc_sd DOUBLE;
ALTER TABLE rsa_results ADD COLUMN acc_ci_low DOUBLE;
ALTER TABLE rsa_results ADD COLUMN acc_ci_high DOUBLE;
ALTER TABLE rsa_results ADD COLUMN eq1_mean DOUBLE;
ALTER TABLE rsa_results ADD COLUMN eq2_mean DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_kendall_a DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_spearman_ci_low DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_spearman_ci_high DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_pearson_ci_low DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_pearson_ci_high DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_kendall_ci_low DOUBLE;
ALTER TABLE rsa_results ADD COLUMN rsa_kendall_ci_high DOUBLE;
ALTER TABLE rsa_results ADD COLUMN n_boot INTEGER;
ALTER TABLE rsa_results ADD COLUMN concepts_sha VARCHAR;
ALTER TABLE rsa_results ADD COLUMN p_1v2_perm DOUBLE;
ALTER TABLE rsa_results ADD COLUMN scope_1v2 VARCHAR;        -- all | within-group

-- Each result's measures on every concept resample, in resample order, for paired comparisons.
CREATE TABLE rsa_resamples (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    reference     VARCHAR NOT NULL,
    acc_2v2       DOUBLE[] NOT NULL,
    rsa_spearman  DOUBLE[] NOT NULL,
    rsa_pearson   DOUBLE[] NOT NULL,
    rsa_kendall_a DOUBLE[] NOT NULL,        -- NaN where not computed (above 300 concepts)
    PRIMARY KEY (model_key, layer, reference)
);

-- Two results (model, layer) against one reference on the same concepts compared: the paired
-- concept bootstrap (the same resamples for both) of the difference a minus b of each measure,
-- its 95 % percentile interval and two-sided p = 2 (s + 1) / (n_boot + 1).
CREATE TABLE rsa_tests (
    reference     VARCHAR NOT NULL,
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
    PRIMARY KEY (reference, model_a, layer_a, model_b, layer_b, measure)
);
