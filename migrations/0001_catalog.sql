-- embstore catalog, version 1: images, models, layers, runs, predictions, errors and the
-- registry of immutable activation Parquet files. Vectors live in Parquet, never here.

CREATE TABLE images (
    image_id    VARCHAR PRIMARY KEY,          -- first 20 hex digits of the file's SHA-256
    path        VARCHAR NOT NULL,             -- absolute path where it was first ingested
    file_size   BIGINT NOT NULL,
    file_mtime  DOUBLE NOT NULL,
    width       INTEGER,
    height      INTEGER,
    mode        VARCHAR,                      -- PIL mode before conversion to RGB
    label_raw   VARCHAR,                      -- label as given (folder name or manifest cell)
    label_wnid  VARCHAR,
    label_index INTEGER,                      -- ImageNet-1k index 0..999
    label_name  VARCHAR,
    source      VARCHAR NOT NULL,             -- folder | class_tree | manifest
    extra       JSON,                         -- other manifest columns
    added_at    TIMESTAMP NOT NULL DEFAULT now()
);
CREATE INDEX images_path ON images (path);

CREATE TABLE models (
    model_key      VARCHAR PRIMARY KEY,       -- name@weights
    name           VARCHAR NOT NULL,
    weights        VARCHAR NOT NULL,          -- IMAGENET1K_V1 | none | file-<sha12> | tf-lite0
    weights_sha256 VARCHAR NOT NULL,          -- hash of the state dict actually used
    source         VARCHAR NOT NULL,          -- torchvision | efficientnet_lite | timm
    resize         INTEGER NOT NULL,
    crop           INTEGER NOT NULL,
    mean           DOUBLE[3] NOT NULL,
    std            DOUBLE[3] NOT NULL,
    interpolation  VARCHAR NOT NULL,
    num_classes    INTEGER NOT NULL,
    created_at     TIMESTAMP NOT NULL DEFAULT now()
);

CREATE TABLE layers (
    model_key  VARCHAR NOT NULL,
    layer      VARCHAR NOT NULL,              -- node name in the model; 'hidden' = penultimate vector
    ord        INTEGER NOT NULL,              -- position in the forward pass
    channels   INTEGER NOT NULL,
    kind       VARCHAR NOT NULL,              -- conv | fc | hidden
    reduction  VARCHAR NOT NULL,              -- gap_relu | identity
    PRIMARY KEY (model_key, layer)
);

CREATE TABLE runs (
    run_id        VARCHAR PRIMARY KEY,
    model_key     VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,           -- running | completed | failed | interrupted
    config        JSON NOT NULL,
    started_at    TIMESTAMP NOT NULL DEFAULT now(),
    finished_at   TIMESTAMP,
    n_images      INTEGER NOT NULL DEFAULT 0, -- candidates found under the input path
    n_done        INTEGER NOT NULL DEFAULT 0, -- images whose vectors this run stored
    n_skipped     INTEGER NOT NULL DEFAULT 0, -- already stored before this run
    n_errors      INTEGER NOT NULL DEFAULT 0,
    n_duplicates  INTEGER NOT NULL DEFAULT 0, -- same content as another path in this run
    load_s        DOUBLE NOT NULL DEFAULT 0,
    forward_s     DOUBLE NOT NULL DEFAULT 0,
    write_s       DOUBLE NOT NULL DEFAULT 0,
    message       VARCHAR
);

CREATE TABLE predictions (
    model_key   VARCHAR NOT NULL,
    image_id    VARCHAR NOT NULL,
    top5_index  INTEGER[5] NOT NULL,
    top5_prob   FLOAT[5] NOT NULL,
    true_rank   INTEGER,                      -- 1-based rank of the labelled class (seed 000 table 1)
    true_prob   FLOAT,
    run_id      VARCHAR NOT NULL,
    PRIMARY KEY (model_key, image_id)
);

CREATE TABLE ingest_errors (
    run_id    VARCHAR NOT NULL,
    path      VARCHAR NOT NULL,
    reason    VARCHAR NOT NULL,
    logged_at TIMESTAMP NOT NULL DEFAULT now()
);

CREATE TABLE activation_files (
    file_id    VARCHAR PRIMARY KEY,
    model_key  VARCHAR NOT NULL,
    layer      VARCHAR NOT NULL,
    rel_path   VARCHAR NOT NULL UNIQUE,       -- relative to <store>/activations
    n_rows     INTEGER NOT NULL,
    n_bytes    BIGINT NOT NULL,
    run_id     VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now()
);

-- One row per stored vector: the primary key is what makes re-ingestion never duplicate.
CREATE TABLE activation_index (
    model_key VARCHAR NOT NULL,
    layer     VARCHAR NOT NULL,
    image_id  VARCHAR NOT NULL,
    file_id   VARCHAR NOT NULL,
    PRIMARY KEY (model_key, layer, image_id)
);

-- Replaced by Store with a read_parquet view over <store>/activations once files exist.
CREATE VIEW activations AS
SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS model, NULL::VARCHAR AS weights,
       NULL::VARCHAR AS layer, NULL::FLOAT[] AS vec
WHERE false;
