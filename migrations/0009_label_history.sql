-- embstore catalog, version 9: relabelling. `ingest --relabel` updates the label of a stored image
-- whose manifest or class folder now says otherwise; every change is kept here. The predictions of
-- a relabelled image get the new class's rank where it is among the stored top-5, else NULL (the
-- rank is then only known to be above 5), so top-1/top-5 correctness treats NULL as wrong.
CREATE TABLE label_history (
    image_id      VARCHAR NOT NULL,
    old_label_raw VARCHAR,
    new_label_raw VARCHAR,
    run_id        VARCHAR NOT NULL,
    changed_at    TIMESTAMP NOT NULL DEFAULT now()
);

CREATE OR REPLACE VIEW labelled_predictions AS
SELECT p.model_key, p.image_id, i.path, i.label_index, i.label_name, p.top5_index, p.top5_prob,
       p.true_rank, p.true_prob, p.top5_index[1] AS predicted_index,
       coalesce(p.true_rank = 1, false) AS top1_correct, coalesce(p.true_rank <= 5, false) AS top5_correct
FROM predictions p JOIN images i USING (image_id)
WHERE i.label_index IS NOT NULL;
