-- embstore catalog, version 8: settings of the store itself. `activations_location` is where the
-- activations Delta table lives when it is not <store>/activations: another folder or an
-- object-store URL (s3://bucket/prefix). It is fixed when the store is created. Credentials are
-- never stored here: each cloud library reads its own environment and config.
CREATE TABLE store_settings (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
