-- embstore catalog, version 11: the statistics of seed 000's comparisons (issue 33, part 1).
-- Each matching result gets a bootstrap interval of its ROC AUC beside the one of its error, both
-- from the same resamples of the triplets, whose count and seed are recorded (NULL: computed before).
ALTER TABLE matching_summary ADD COLUMN auc_ci_low DOUBLE;
ALTER TABLE matching_summary ADD COLUMN auc_ci_high DOUBLE;
ALTER TABLE matching_summary ADD COLUMN n_boot INTEGER;
ALTER TABLE matching_summary ADD COLUMN seed INTEGER;

-- Two (model, layer) results on the same triplets compared: McNemar's exact test on the triplets
-- one matches and the other misses, and a paired bootstrap (the same resampled triplets for both)
-- of the differences in error and in AUC (a minus b), with its 95 % percentile interval and p.
CREATE TABLE matching_tests (
    manifest_sha     VARCHAR NOT NULL,
    model_a          VARCHAR NOT NULL,
    layer_a          VARCHAR NOT NULL,
    model_b          VARCHAR NOT NULL,
    layer_b          VARCHAR NOT NULL,
    n_triplets       INTEGER NOT NULL,
    error_a          DOUBLE NOT NULL,
    error_b          DOUBLE NOT NULL,
    d_error          DOUBLE NOT NULL,       -- error_a - error_b
    d_error_ci_low   DOUBLE NOT NULL,
    d_error_ci_high  DOUBLE NOT NULL,
    a_only           INTEGER NOT NULL,      -- triplets a matches and b misses
    b_only           INTEGER NOT NULL,      -- triplets b matches and a misses
    mcnemar_p        DOUBLE NOT NULL,       -- exact two-sided binomial p of a_only among a_only + b_only
    auc_a            DOUBLE NOT NULL,
    auc_b            DOUBLE NOT NULL,
    d_auc            DOUBLE NOT NULL,       -- auc_a - auc_b
    d_auc_ci_low     DOUBLE NOT NULL,
    d_auc_ci_high    DOUBLE NOT NULL,
    d_auc_p          DOUBLE NOT NULL,       -- paired bootstrap, two-sided: 2 (s + 1) / (n_boot + 1)
    n_boot           INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    computed_at      TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (manifest_sha, model_a, layer_a, model_b, layer_b)
);

-- The 1 vs 2 test (seed 004 §3.3) gets its own p: exact one-sided binomial p of its accuracy
-- against chance 0.5 over n_1v2 images (NULL where no image qualifies, or computed before). Figures
-- had marked 1 vs 2 significance from the 2 vs 2 permutation p.
ALTER TABLE rsa_results ADD COLUMN p_1v2 DOUBLE;
