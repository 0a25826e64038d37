-- embstore catalog, version 14: any label vocabulary (issue 34). An image's label belongs to a
-- named label set: `imagenet1k` (the 1000 ImageNet classes, indices and wnids as before) or any
-- other vocabulary (THINGS, ecoset, a lab's own categories) made by an ingest from its folder
-- names or manifest labels, with optional ids (a THINGS unique id, a WordNet synset) and an
-- optional category. label_index is the class's index within its set. Class statistics and their
-- tables are per set; predictions rank the true class only for imagenet1k labels (the models'
-- heads are ImageNet's). Existing stores migrate unchanged: every labelled image is imagenet1k's.
CREATE TABLE label_sets (
    label_set   VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,           -- imagenet1k | names
    created_at  TIMESTAMP NOT NULL DEFAULT now()
);
INSERT INTO label_sets (label_set, kind) VALUES ('imagenet1k', 'imagenet1k');

CREATE TABLE labels (
    label_set   VARCHAR NOT NULL,
    label_index INTEGER NOT NULL,           -- 0-based within the set, in order of first appearance
    name        VARCHAR NOT NULL,           -- as given (imagenet1k: torchvision's name)
    label_id    VARCHAR,                    -- imagenet1k: the wnid; others: an id column if given
    category    VARCHAR,                    -- optional, from a manifest's category column
    PRIMARY KEY (label_set, label_index),
    UNIQUE (label_set, name)
);
INSERT INTO labels SELECT 'imagenet1k', label_index, name, wnid, NULL FROM imagenet_classes;

ALTER TABLE images ADD COLUMN label_set VARCHAR;  -- NULL: unlabelled
UPDATE images SET label_set = 'imagenet1k' WHERE label_index IS NOT NULL;

CREATE OR REPLACE VIEW labelled_predictions AS
SELECT p.model_key, p.image_id, i.path, i.label_index, i.label_name, p.top5_index, p.top5_prob,
       p.true_rank, p.true_prob, p.top5_index[1] AS predicted_index,
       coalesce(p.true_rank = 1, false) AS top1_correct, coalesce(p.true_rank <= 5, false) AS top5_correct
FROM predictions p JOIN images i USING (image_id)
WHERE i.label_set = 'imagenet1k';

ALTER TABLE class_prototypes RENAME TO class_prototypes_v13;
CREATE TABLE class_prototypes (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    label_set     VARCHAR NOT NULL,
    label_index   INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    mean          DOUBLE[] NOT NULL,
    computed_from VARCHAR NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, label_set, label_index)
);
INSERT INTO class_prototypes SELECT model_key, layer, 'imagenet1k', label_index, n, mean, computed_from, computed_at
FROM class_prototypes_v13;
DROP TABLE class_prototypes_v13;

ALTER TABLE class_tstats RENAME TO class_tstats_v13;
CREATE TABLE class_tstats (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    label_set     VARCHAR NOT NULL,
    label_index   INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    t             DOUBLE[] NOT NULL,          -- class vs every other image of its label set, per channel
    df            DOUBLE[] NOT NULL,          -- Welch-Satterthwaite degrees of freedom (NULL: no variance)
    computed_from VARCHAR NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, label_set, label_index)
);
INSERT INTO class_tstats SELECT model_key, layer, 'imagenet1k', label_index, n, t, df, computed_from, computed_at
FROM class_tstats_v13;
DROP TABLE class_tstats_v13;

-- class names of any set, without a UDF: SELECT label_name('things', 3)
CREATE MACRO label_name(s, i) AS (SELECT name FROM labels WHERE label_set = s AND label_index = i);

CREATE OR REPLACE MACRO class_means(mk, lyr) AS TABLE
SELECT label_set, label_index, any_value(n) AS n, list(m ORDER BY ch) AS mean FROM (
    SELECT i.label_set, i.label_index, r.ch, count(*) AS n, avg(a.vec[r.ch]::DOUBLE) AS m
    FROM activations a JOIN images i USING (image_id), range(1, len(a.vec) + 1) r(ch)
    WHERE a.model || '@' || a.weights = mk AND a.layer = lyr AND i.label_index IS NOT NULL
    GROUP BY i.label_set, i.label_index, r.ch)
GROUP BY label_set, label_index;
