-- Similarity-encoding results (seed 004), one row per model layer and reference space.
CREATE TABLE rsa_results (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    layer_order   INTEGER NOT NULL,           -- position in the forward pass
    reference     VARCHAR NOT NULL,           -- glove-6B-50d | a vectors file name | wordnet-wup | wordnet-path
    n_concepts    INTEGER NOT NULL,
    n_groups      INTEGER NOT NULL,
    acc_2v2       DOUBLE NOT NULL,            -- mean over groups; chance 0.5
    p_value       DOUBLE,                     -- permutation test over concept rows
    n_permutations INTEGER NOT NULL,
    rsa_spearman  DOUBLE NOT NULL,            -- RDMs of reference and class-mean layer vectors
    rsa_pearson   DOUBLE NOT NULL,
    acc_1v2       DOUBLE,                     -- misclassified images; NULL when none qualify
    n_1v2         INTEGER NOT NULL,
    seed          INTEGER NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, reference)
);

-- The class vectors each reference space gave (how: name | synonym:… | hypernym:…), for SQL joins.
CREATE TABLE reference_vectors (
    reference   VARCHAR NOT NULL,
    label_index INTEGER NOT NULL,
    how         VARCHAR NOT NULL,
    vec         DOUBLE[] NOT NULL,
    PRIMARY KEY (reference, label_index)
);
