-- Triplet matching results (seed 000), materialised by `embstore analyze matching`, and a view of
-- labelled predictions for failure analysis (seed 000 table 1).

CREATE TABLE matching_results (
    manifest_sha   VARCHAR NOT NULL,          -- SHA-256 of the triplet manifest file
    model_key      VARCHAR NOT NULL,
    layer          VARCHAR NOT NULL,
    triplet        INTEGER NOT NULL,          -- row number in the manifest, from 0
    object_id      VARCHAR NOT NULL,
    related_id     VARCHAR NOT NULL,
    unrelated_id   VARCHAR NOT NULL,
    cos_related    DOUBLE NOT NULL,
    cos_unrelated  DOUBLE NOT NULL,
    matched        BOOLEAN NOT NULL,          -- cos_related > cos_unrelated (a tie is not a match)
    rating_related DOUBLE,
    rating_unrelated DOUBLE,
    PRIMARY KEY (manifest_sha, model_key, layer, triplet)
);

CREATE TABLE matching_summary (
    manifest_sha  VARCHAR NOT NULL,
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    n_triplets    INTEGER NOT NULL,
    error         DOUBLE NOT NULL,
    error_ci_low  DOUBLE NOT NULL,            -- bootstrap 95 % percentile interval
    error_ci_high DOUBLE NOT NULL,
    auc           DOUBLE NOT NULL,            -- ROC AUC over the 2N pairs scored by cosine
    computed_from VARCHAR NOT NULL,           -- fingerprint of the activation files used
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (manifest_sha, model_key, layer)
);

CREATE VIEW labelled_predictions AS
SELECT p.model_key, p.image_id, i.path, i.label_index, i.label_name, p.top5_index, p.top5_prob,
       p.true_rank, p.true_prob, p.top5_index[1] AS predicted_index, p.true_rank = 1 AS top1_correct,
       p.true_rank <= 5 AS top5_correct
FROM predictions p JOIN images i USING (image_id)
WHERE i.label_index IS NOT NULL;
