-- embstore catalog, version 10: a layer is a node of the network's computation graph (torchvision's
-- feature-extraction names: `layer1.0.relu`, `layer1.0.relu_1`, `layer1.0.add`). Before, a layer
-- was a module name, and a module called more than once per forward pass was stored as its LAST
-- call under its name while `channels` recorded its first. `naming` tells the rows apart: 'module'
-- for every row recorded before this migration, 'node' after; `embstore verify` names the 'module'
-- rows whose module runs more than once (or whose vectors' width is not `channels`) and
-- `verify --repair` removes their vectors, so that the next ingest stores the right ones.
ALTER TABLE layers ADD COLUMN naming VARCHAR DEFAULT 'node';
UPDATE layers SET naming = 'module';
ALTER TABLE layers ADD COLUMN node_op VARCHAR;     -- module | function | hidden (NULL: recorded before)
ALTER TABLE layers ADD COLUMN module VARCHAR;      -- the module called, or whose forward runs the op
ALTER TABLE layers ADD COLUMN call_index INTEGER;  -- which call of `module` the node is (0 = the first)

-- Preprocessing beyond torchvision's recipe (Keras' squash resize without a crop, BGR 0-255 "caffe"
-- colours): rows recorded before keep torchvision's. A model run with other preprocessing than its
-- own has it named in its key (`resnet50@IMAGENET1K_V1~keras-caffe`): `weights` holds that tag.
ALTER TABLE models ALTER COLUMN crop DROP NOT NULL;  -- NULL: no centre crop
ALTER TABLE models ADD COLUMN resize_mode VARCHAR DEFAULT 'shorter';  -- shorter | squash
ALTER TABLE models ADD COLUMN color VARCHAR DEFAULT 'rgb';            -- rgb | bgr
ALTER TABLE models ADD COLUMN scale VARCHAR DEFAULT 'unit';           -- unit | 0-255
