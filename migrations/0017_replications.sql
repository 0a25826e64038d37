-- embstore catalog, version 17: what `embstore replicate SEED` has done (issue 35), one row per
-- step of a seed's plan, so that an interrupted replicate resumes after its last finished step and
-- the report's scoreboard knows which stored model stands for which of the paper's networks.
CREATE TABLE replications (
    seed       VARCHAR NOT NULL,            -- seed000 | seed003 | seed004
    item       VARCHAR NOT NULL,            -- the paper's network ('ResNet-50'); '' for the seed's own steps
    step       VARCHAR NOT NULL,            -- matching | similar | rsa | ...
    model_key  VARCHAR,
    plan_sha   VARCHAR NOT NULL,            -- sha256 of the plan's JSON: another plan reruns the step
    state      VARCHAR NOT NULL,            -- the vectors it ran on (Catalog.layer_fingerprint): new ones rerun it
    plan       JSON NOT NULL,               -- the plan (its differences from the paper mark the scoreboard)
    detail     JSON NOT NULL,               -- what the step recorded (manifest sha, reference, counts)
    done_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (seed, item, step)
);
