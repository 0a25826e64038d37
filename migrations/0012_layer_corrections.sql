-- embstore catalog, version 12: a curve tests every layer, so its p-values are corrected across the
-- layers of one run (one model, one reference space): Holm's step-down (family-wise error) and
-- Benjamini-Hochberg (false discovery rate), for the 2 vs 2 permutation p and the 1 vs 2 binomial p.
-- NULL where the raw p is NULL, or for results computed before (figures then adjust on the fly).
ALTER TABLE rsa_results ADD COLUMN p_holm DOUBLE;
ALTER TABLE rsa_results ADD COLUMN p_bh DOUBLE;
ALTER TABLE rsa_results ADD COLUMN p_1v2_holm DOUBLE;
ALTER TABLE rsa_results ADD COLUMN p_1v2_bh DOUBLE;
