-- embstore catalog, version 6: the vectors move into a Delta Lake table at <store>/activations
-- (delta-rs), partitioned by model / weights / layer. The catalog no longer keeps a row per vector:
-- it records committed batches (and which images each holds), and the data files of the one Delta
-- version readers see. The old Parquet registry is renamed; embstore converts its files into the
-- Delta table on open (store/table.py, `convert_legacy`) and then drops it.

ALTER TABLE activation_files RENAME TO legacy_activation_files;
ALTER TABLE activation_index RENAME TO legacy_activation_index;

-- A batch: vectors appended to the Delta table in one commit, tagged with batch_id. Every image
-- of the batch has a vector of each of its layers. Rows whose batch_id is not here are uncommitted.
CREATE TABLE vector_batches (
    batch_id     VARCHAR PRIMARY KEY,
    model_key    VARCHAR NOT NULL,
    run_id       VARCHAR NOT NULL,
    layers       VARCHAR[] NOT NULL,
    n_images     INTEGER NOT NULL,
    n_bytes      BIGINT NOT NULL,             -- encoded vector bytes appended (all layers)
    committed_at TIMESTAMP NOT NULL DEFAULT now()
);

-- Which images a batch holds: one row per image per model (per batch that added layers to it).
CREATE TABLE batch_images (
    model_key VARCHAR NOT NULL,
    image_id  VARCHAR NOT NULL,
    batch_id  VARCHAR NOT NULL
);

-- The data files of the pinned Delta version: everything a reader (the activations view, search,
-- the analyses) reads. Replaced, with the view, in the same transaction that commits a batch.
CREATE TABLE table_files (
    rel_path  VARCHAR PRIMARY KEY,            -- relative to the store folder
    model_key VARCHAR NOT NULL,
    layer     VARCHAR NOT NULL,
    n_rows    BIGINT NOT NULL,
    n_bytes   BIGINT NOT NULL
);

CREATE TABLE table_state (
    version   BIGINT NOT NULL,                -- the Delta version whose files table_files lists
    pinned_at TIMESTAMP NOT NULL DEFAULT now()
);

-- How a layer's vectors are encoded in the table: float32, or int8 (per-vector scale and offset).
ALTER TABLE layers ADD COLUMN dtype VARCHAR DEFAULT 'float32';
