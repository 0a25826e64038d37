-- embstore catalog, version 16: the ImageNet classes a label of another set stands for (issue 34),
-- so classification errors and failures (seed 000 table 1) run on any label set that maps to the
-- models' ImageNet heads. A label maps where its id names a WordNet noun synset that is an
-- ImageNet class or a hypernym of classes (THINGS' "dog" n02084071 -> the 118 dog breeds below it);
-- an image of such a label is classified correctly when the top-1 class is one of them. Its
-- prediction's true_rank is the rank of the best-ranked of its classes, true_prob their summed
-- probability (one class: that class's, as for imagenet1k). Mappings are made when an ingest adds
-- the labels; labels added before this version have none (their images have no error rate).
CREATE TABLE label_classes (
    label_set   VARCHAR NOT NULL,
    label_index INTEGER NOT NULL,
    class_index INTEGER NOT NULL,           -- an ImageNet class index (imagenet_classes)
    PRIMARY KEY (label_set, label_index, class_index)
);

-- every labelled image whose label is an ImageNet class or maps to some, per label set
CREATE OR REPLACE VIEW labelled_predictions AS
SELECT p.model_key, p.image_id, i.path, i.label_set, i.label_index, i.label_name, p.top5_index, p.top5_prob,
       p.true_rank, p.true_prob, p.top5_index[1] AS predicted_index,
       coalesce(p.true_rank = 1, false) AS top1_correct, coalesce(p.true_rank <= 5, false) AS top5_correct
FROM predictions p JOIN images i USING (image_id)
WHERE i.label_set = 'imagenet1k'
   OR EXISTS (SELECT 1 FROM label_classes m WHERE m.label_set = i.label_set AND m.label_index = i.label_index);
