-- embstore catalog, version 7: no index on images.path. Ingest looks paths up with one hash join per
-- run (and `query images PATH` one scan), so the ART index bought nothing but ~60 bytes per image
-- of catalog file; the catalog's budget is 200 bytes per image per model.
DROP INDEX IF EXISTS images_path;
