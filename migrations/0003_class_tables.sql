-- Class prototypes and one-vs-rest Welch t-statistics (seed 003 §3.1-3.2), materialised by
-- `embstore analyze prototypes|tstats` from per-class sufficient statistics (float64), with the
-- fingerprint of the activation files and labels they were computed from.

CREATE TABLE class_prototypes (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    label_index   INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    mean          DOUBLE[] NOT NULL,
    computed_from VARCHAR NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, label_index)
);

CREATE TABLE class_tstats (
    model_key     VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    label_index   INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    t             DOUBLE[] NOT NULL,          -- class vs every other labelled image, per channel
    df            DOUBLE[] NOT NULL,          -- Welch-Satterthwaite degrees of freedom (NULL: no variance)
    computed_from VARCHAR NOT NULL,
    computed_at   TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, layer, label_index)
);

-- Pure-SQL class means for a plain duckdb shell: SELECT * FROM class_means('resnet50@IMAGENET1K_V2', 'layer4.2')
CREATE MACRO class_means(mk, lyr) AS TABLE
SELECT label_index, any_value(n) AS n, list(m ORDER BY ch) AS mean FROM (
    SELECT i.label_index, r.ch, count(*) AS n, avg(a.vec[r.ch]::DOUBLE) AS m
    FROM activations a JOIN images i USING (image_id), range(1, len(a.vec) + 1) r(ch)
    WHERE a.model || '@' || a.weights = mk AND a.layer = lyr AND i.label_index IS NOT NULL
    GROUP BY i.label_index, r.ch)
GROUP BY label_index;

CREATE MACRO cosine(a, b) AS list_cosine_similarity(a, b);
