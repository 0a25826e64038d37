-- embstore catalog, version 18: principal-component bases of whole feature maps (issue 35), each
-- fitted once on a named reference image set (`embstore fit-pca`), so that `NAME~pcaK` layers
-- project every later image on the same components. The arrays (mean and K x C·H·W components,
-- float32) live in <store>/bases/<sha>.npz; `sha` is the SHA-256 of that file's arrays, and
-- layers.reduction names it (pca_relu:K:<sha>).
CREATE TABLE pca_bases (
    model_key  VARCHAR NOT NULL,
    layer      VARCHAR NOT NULL,            -- the node whose ReLU map is projected
    k          INTEGER NOT NULL,
    sha        VARCHAR NOT NULL UNIQUE,
    name       VARCHAR NOT NULL,            -- the reference image set, as its user named it
    images     VARCHAR NOT NULL,            -- the reference images as given (folder or manifest)
    image_ids  VARCHAR[] NOT NULL,          -- their content ids, in the order fitted
    width      INTEGER NOT NULL,            -- C·H·W of the flattened map
    explained  DOUBLE[] NOT NULL,           -- each component's share of the maps' variance
    fitted_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model_key, layer, k)
);
