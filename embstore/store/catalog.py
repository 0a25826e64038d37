"""Every SQL statement on the catalog's tables (images, models, layers, runs, vector batches, the
pinned files of the activations table, predictions, ingest errors), in one place, values always
bound as parameters. The analyses' result tables are owned by their analysis modules (matching, classtables, rsatables).

`Catalog` wraps one open DuckDB connection (from `StoreCore.write()/read()/transaction()`).
Over ~450 lines by design: the catalog's SQL is owned by the one object that owns its tables
(STYLE.md), so a schema change is read and made in one file.
"""

from __future__ import annotations

import hashlib
import json

from embstore.errors import StoreError
from embstore.spec import ModelKey
from embstore.store.duck import dict_rows

# The one definition of classification error: over a model's labelled images of one label set
# (imagenet1k, or a set whose labels map to ImageNet classes: migration 0016), the share whose true
# class is not ranked first (top-1) or not among the first five (top-5). Used by status, report, failures.
ERROR_RATES = """SELECT model_key, label_set, count(*) AS labelled, 1 - avg(top1_correct::INT) AS top1_error,
                        1 - avg(top5_correct::INT) AS top5_error, median(true_rank) AS median_true_rank
                 FROM labelled_predictions GROUP BY model_key, label_set"""

_LABELLED_VECTORS = """FROM batch_images x JOIN vector_batches b USING (batch_id) JOIN images i USING (image_id)
                       WHERE x.model_key = ? AND list_contains(b.layers, ?) AND i.label_set = ?"""
# (model_key, image_id, layer) of every stored vector, from the batches (one row per batch, not per vector)
_STORED = """SELECT x.image_id, unnest(b.layers) AS layer FROM batch_images x JOIN vector_batches b USING (batch_id)
             WHERE x.model_key = ?"""


class Catalog:
    def __init__(self, con):
        self.con = con

    # -- models and layers -----------------------------------------------------------------
    def upsert_model(self, spec, weights_sha256: str) -> None:
        """Record `spec`; a key already recorded with other preprocessing is refused (never mixed)."""
        p = spec.preprocessing
        have = self.model_preprocessing(spec.key)
        if have is not None:
            if have != p:
                raise StoreError(
                    f"{spec.key} in this store was ingested with other preprocessing ({have}); a model run with other "
                    "preprocessing needs its own key: pass it as preprocessing (the key then names it)"
                )
            return
        self.con.execute(
            """INSERT INTO models (model_key, name, weights, weights_sha256, source, resize, crop, mean, std,
                                   interpolation, resize_mode, color, scale, num_classes)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [spec.key, spec.name, spec.tag, weights_sha256, spec.source, p.resize, p.crop, list(p.mean), list(p.std),
             p.interpolation, p.resize_mode, p.color, p.scale, spec.num_classes],
        )  # fmt: skip

    def model_preprocessing(self, model_key: str):
        """The Preprocessing a stored model's vectors were computed with, or None for an unknown key."""
        from embstore.spec import Preprocessing

        rows = self.con.execute(
            """SELECT resize, crop, mean, std, interpolation, resize_mode, color, scale FROM models
               WHERE model_key = ?""",
            [model_key],
        ).fetchall()
        if not rows:
            return None
        row = rows[0]
        return Preprocessing(row[0], row[1], tuple(row[2]), tuple(row[3]), *row[4:])

    def model_sha(self, model_key: str) -> str | None:
        rows = self.con.execute("SELECT weights_sha256 FROM models WHERE model_key = ?", [model_key]).fetchall()
        return rows[0][0] if rows else None

    def upsert_layers(self, model_key: str, layers, dtype: str = "float32") -> None:
        """Record `layers` (stored as `dtype`); a layer with vectors keeps its dtype: asking another is an error."""
        from embstore.errors import UsageError

        stored = {name for name, _, _ in self.layers_with_vectors(model_key)}
        for l in layers:
            self.con.execute(
                """INSERT INTO layers (model_key, layer, ord, channels, kind, reduction, dtype, naming, node_op,
                                       module, call_index)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'node', ?, ?, ?) ON CONFLICT DO NOTHING""",
                [model_key, l.name, l.ord, l.channels, l.kind, l.reduction, dtype, l.op, l.module, l.call],
            )
            have = self.con.execute(
                "SELECT dtype FROM layers WHERE model_key = ? AND layer = ?", [model_key, l.name]
            ).fetchall()[0][0]
            if have != dtype and l.name in stored:
                raise UsageError(
                    f"layer {l.name} of {model_key} is stored as {have}; ingest it with dtype {have} "
                    "(or into another store)"
                )
            if have != dtype:
                self.con.execute(
                    "UPDATE layers SET dtype = ? WHERE model_key = ? AND layer = ?", [dtype, model_key, l.name]
                )

    def check_layer_identity(self, model_key: str, layers) -> None:
        """Refuse to add vectors to a layer an earlier embstore stored as another node (a module called
        more than once, stored as its last call under its name, or of another width); upgrade the
        rows of earlier releases that mean the same node to 'node' naming."""
        rows = self.con.execute(
            "SELECT layer, channels FROM layers WHERE model_key = ? AND naming = 'module'", [model_key]
        ).fetchall()
        old = dict(rows)
        stored = {name for name, _, _ in self.layers_with_vectors(model_key)}
        for l in layers:
            if l.name not in old:
                continue
            if l.name in stored and (l.calls > 1 or old[l.name] != l.channels):
                raise StoreError(
                    f"layer {l.name} of {model_key} was stored by an earlier embstore, which kept the LAST of "
                    f"module {l.module}'s {l.calls} calls under that name; `embstore verify --repair` removes those "
                    "vectors, then ingest again"
                )
            self.con.execute(
                """UPDATE layers SET naming = 'node', channels = ?, ord = ?, kind = ?, reduction = ?, node_op = ?,
                   module = ?, call_index = ? WHERE model_key = ? AND layer = ?""",
                [l.channels, l.ord, l.kind, l.reduction, l.op, l.module, l.call, model_key, l.name],
            )

    def module_named_layers(self) -> list[tuple[str, str, int]]:
        """(model_key, layer, channels) of the stored layers recorded before layers were graph nodes."""
        return self.con.execute(
            """SELECT l.model_key, l.layer, l.channels FROM layers l WHERE l.naming = 'module' AND l.layer <> 'hidden'
               AND EXISTS (SELECT 1 FROM table_files f WHERE f.model_key = l.model_key AND f.layer = l.layer)
               ORDER BY l.model_key, l.ord"""
        ).fetchall()

    def forget_layer(self, model_key: str, layer: str) -> None:
        """Forget every stored vector of one layer (its files are removed from the table by the caller),
        so the next ingest of it stores it again; batches left with no layer are dropped."""
        self.con.execute(
            """UPDATE vector_batches SET layers = list_filter(layers, lambda x: x <> ?)
               WHERE model_key = ? AND list_contains(layers, ?)""",
            [layer, model_key, layer],
        )
        empty = "SELECT batch_id FROM vector_batches WHERE model_key = ? AND len(layers) = 0"
        self.con.execute(f"DELETE FROM batch_images WHERE batch_id IN ({empty})", [model_key])
        self.con.execute("DELETE FROM vector_batches WHERE model_key = ? AND len(layers) = 0", [model_key])
        self.con.execute("DELETE FROM layers WHERE model_key = ? AND layer = ?", [model_key, layer])

    def layer_width(self, model_key: str, layer: str) -> int:
        rows = self.con.execute(
            "SELECT channels FROM layers WHERE model_key = ? AND layer = ?", [model_key, layer]
        ).fetchall()
        return int(rows[0][0]) if rows else 0

    def stored_model_keys(self) -> list[str]:
        """Model keys that have at least one stored vector (a pinned file of the activations table)."""
        return [r[0] for r in self.con.execute("SELECT DISTINCT model_key FROM table_files ORDER BY 1").fetchall()]

    def stored_layer_widths(self) -> list[tuple[str, str, str, str, int]]:
        """(model_key, model name, weights tag, layer, channels) of every layer with stored vectors."""
        return self.con.execute(
            """SELECT l.model_key, m.name, m.weights, l.layer, l.channels FROM layers l JOIN models m USING (model_key)
               WHERE EXISTS (SELECT 1 FROM table_files f WHERE f.model_key = l.model_key AND f.layer = l.layer)
               ORDER BY l.model_key, l.ord"""
        ).fetchall()

    def layer_vector_views(self) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND starts_with(view_name, 'vectors/')"
        ).fetchall()]  # fmt: skip

    def layers_with_vectors(self, model_key: str) -> list[tuple[str, int, str]]:
        """(layer, order, kind) of the layers of `model_key` with stored vectors, in forward order."""
        return self.con.execute(
            """SELECT l.layer, l.ord, l.kind FROM layers l WHERE l.model_key = ? AND EXISTS (
                   SELECT 1 FROM table_files f WHERE f.model_key = l.model_key AND f.layer = l.layer)
               ORDER BY l.ord""",
            [model_key],
        ).fetchall()

    def require_layer(self, model_key: str, layer: str) -> None:
        """Raise UnknownLayerError, naming the stored layers, unless `model_key` has vectors of `layer`."""
        from embstore.errors import UnknownLayerError, did_you_mean

        names = [name for name, _, _ in self.layers_with_vectors(model_key)]
        if layer not in names:
            raise UnknownLayerError(
                f"no vectors of layer '{layer}' for {model_key}.{did_you_mean(layer, names)} "
                f"Stored layers: {', '.join(names[:12])}{', …' if len(names) > 12 else ''}"
            )

    def latest_model(self, keys: list[str]) -> str:
        """Of `keys`, the model whose vectors were stored most recently."""
        return self.con.execute(
            """SELECT model_key FROM vector_batches f JOIN runs r USING (run_id, model_key)
               WHERE list_contains(?, model_key) ORDER BY r.started_at DESC, model_key LIMIT 1""",
            [keys],
        ).fetchall()[0][0]

    def resolve_model_noted(self, model: str | None) -> tuple[str, str | None]:
        """`resolve_model`, plus a note naming the choice when `model` is None and several are stored."""
        key = self.resolve_model(model)
        n = len(self.stored_model_keys()) if model is None else 1
        note = f"model {key}: the most recently ingested of {n} (pick another with `model=NAME`)" if n > 1 else None
        return key, note

    def resolve_model(self, model: str | None) -> str:
        """The model key (name@weights) that `model` names among those with stored vectors; with no
        `model`, the store's only model, else the one ingested most recently."""
        from embstore.errors import NotFoundError, UnknownModelError, did_you_mean

        keys = self.stored_model_keys()
        if not keys:
            raise NotFoundError("this store holds no vectors yet; run `embstore ingest --images DIR` first")
        if model is None:
            return keys[0] if len(keys) == 1 else self.latest_model(keys)
        if model in keys:
            return model
        named = [k for k in keys if ModelKey.parse(k).name == model]
        if len(named) == 1:
            return named[0]
        if named:
            raise UnknownModelError(f"{model} is stored with several weights ({', '.join(named)}); give one of them")
        from embstore.spec import available_models

        name = ModelKey.parse(model).name
        if name in available_models() or name.startswith("timm:"):
            raise UnknownModelError(
                f"model {model} was never ingested into this store (it holds {', '.join(keys)}); run "
                f"`embstore ingest --model {name} --images DIR`.{did_you_mean(model, keys)}"
            )
        raise UnknownModelError(  # not a name ingest knows either: advise no ingest that would fail
            f"unknown model '{model}': this store holds {', '.join(keys)}."
            f"{did_you_mean(name, [*keys, *available_models()])}"
        )

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str, model_key: str, config: dict, n_images: int) -> None:
        self.con.execute(
            "INSERT INTO runs (run_id, model_key, status, config, n_images) VALUES (?, ?, 'running', ?, ?)",
            [run_id, model_key, json.dumps(config), n_images],
        )

    def add_run_counts(self, run_id: str, **counts) -> None:
        cols = ("n_done", "n_skipped", "n_errors", "n_duplicates", "load_s", "forward_s", "write_s")
        sets = ", ".join(f"{c} = {c} + ?" for c in cols)
        self.con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [counts.get(c, 0) for c in cols] + [run_id])

    def finish_run(self, run_id: str, status: str, message: str | None = None, config: dict | None = None) -> None:
        """End a run; `config` replaces the recorded one (what ran, once the engine has decided it)."""
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = now(), message = ?, config = coalesce(?, config) "
            "WHERE run_id = ?",
            [status, message, None if config is None else json.dumps(config), run_id],
        )

    def interrupt_run(self, run_id: str, message: str) -> bool:
        """Mark one run interrupted if it is still `running` (its process is known to be gone)."""
        rows = self.con.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = now(), message = ? "
            "WHERE run_id = ? AND status = 'running' RETURNING run_id",
            [message, run_id],
        ).fetchall()
        return bool(rows)

    def mark_stale_runs(self) -> int:
        """Runs left 'running' by a process that died: call only while holding the ingest lock."""
        rows = self.con.execute(
            """UPDATE runs SET status = 'interrupted', finished_at = coalesce(finished_at, now()),
                   message = 'the ingest process ended without finishing' WHERE status = 'running'
               RETURNING run_id"""
        ).fetchall()
        return len(rows)

    def run(self, run_id: str) -> dict:
        return self._dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]

    # -- images, predictions, errors -------------------------------------------------------
    def known_paths(self, paths_table) -> dict[str, tuple[str, int, float]]:
        """{path: (image_id, size, mtime)} for the given paths already in `images`."""
        self.con.register("_paths", paths_table)
        try:
            rows = self.con.execute(
                "SELECT i.path, i.image_id, i.file_size, i.file_mtime FROM images i JOIN _paths p ON i.path = p.path"
            ).fetchall()
        finally:
            self.con.unregister("_paths")
        return {p: (i, s, m) for p, i, s, m in rows}

    def label_changes(self, given) -> list[tuple[str, str, str | None, str]]:
        """[(image_id, path, stored label_raw, given label_raw)] of stored images whose input names
        another label, or the same one in another label set; `given` is an Arrow table (path,
        label_raw, label_set) of labelled inputs."""
        self.con.register("_given", given)
        try:
            return self.con.execute(
                """SELECT i.image_id, i.path, i.label_raw, g.label_raw FROM images i JOIN _given g ON i.path = g.path
                   WHERE g.label_raw IS NOT NULL AND (i.label_raw IS DISTINCT FROM g.label_raw
                         OR i.label_set IS DISTINCT FROM g.label_set) ORDER BY i.path"""
            ).fetchall()
        finally:
            self.con.unregister("_given")

    def relabel(self, changes, run_id: str) -> int:
        """Give images their new labels (an Arrow table image_id, label_raw, label_set, label_wnid,
        label_index, label_name), keep the old ones in label_history, and re-rank their predictions: the
        best place of the new label's ImageNet class(es) in each stored top-5, else NULL (above 5, or no
        ImageNet class); the true class's probability where it is one class within the top-5, else NULL
        (only the top-5 is kept)."""
        self.con.register("_new", changes)
        try:
            self.con.execute(
                """INSERT INTO label_history (image_id, old_label_raw, new_label_raw, run_id)
                   SELECT i.image_id, i.label_raw, n.label_raw, ? FROM images i JOIN _new n USING (image_id)""",
                [run_id],
            )
            self.con.execute(
                """UPDATE images SET label_raw = n.label_raw, label_set = n.label_set, label_wnid = n.label_wnid,
                          label_index = n.label_index, label_name = n.label_name
                   FROM _new n WHERE images.image_id = n.image_id"""
            )
            # the classes each new label stands for: its own (imagenet1k) or those it maps to
            self.con.execute(
                """UPDATE predictions SET true_rank = r.rank, true_prob = r.prob FROM (
                       SELECT p.model_key, p.image_id, min(list_position(p.top5_index, c.cls)) AS rank,
                              CASE WHEN count(c.cls) = 1 THEN
                                   any_value(p.top5_prob[list_position(p.top5_index, c.cls)]) END AS prob
                       FROM predictions p JOIN _new n USING (image_id)
                       LEFT JOIN (SELECT n.image_id, n.label_index AS cls FROM _new n WHERE n.label_set = 'imagenet1k'
                                  UNION ALL
                                  SELECT n.image_id, m.class_index FROM _new n JOIN label_classes m
                                  ON m.label_set = n.label_set AND m.label_index = n.label_index) c USING (image_id)
                       GROUP BY ALL) r
                   WHERE predictions.model_key = r.model_key AND predictions.image_id = r.image_id"""
            )
        finally:
            self.con.unregister("_new")
        return changes.num_rows

    def complete_images(self, model_key: str, layers: list[str]) -> set[str]:
        """Image ids that have a stored vector for every one of `layers`."""
        rows = self.con.execute(
            f"""SELECT image_id FROM ({_STORED}) WHERE list_contains(?, layer)
                GROUP BY image_id HAVING count(DISTINCT layer) = ?""",
            [model_key, layers, len(layers)],
        ).fetchall()
        return {r[0] for r in rows}

    def stored_layers(self, model_key: str, image_ids: list[str]) -> dict[str, set[str]]:
        rows = self.con.execute(
            f"SELECT image_id, layer FROM ({_STORED} AND list_contains(?, x.image_id))", [model_key, image_ids]
        ).fetchall()
        out: dict[str, set[str]] = {}
        for image_id, layer in rows:
            out.setdefault(image_id, set()).add(layer)
        return out

    def example_images(
        self, label_indexes: list[int], model_key: str | None = None, label_set: str = "imagenet1k"
    ) -> dict[int, tuple[str, str]]:
        """{label_index: (image_id, path)}: one labelled image per class of `label_set`, preferring one
        that `model_key` classified correctly (then by id, so the choice is stable)."""
        rows = self.con.execute(
            """SELECT i.label_index, arg_min(i.image_id, (coalesce(p.true_rank, 1 << 30), i.image_id)),
                      arg_min(i.path, (coalesce(p.true_rank, 1 << 30), i.image_id))
               FROM images i LEFT JOIN predictions p ON p.image_id = i.image_id AND p.model_key = ?
               WHERE i.label_set = ? AND list_contains(?, i.label_index) GROUP BY i.label_index""",
            [model_key, label_set, [int(c) for c in label_indexes]],
        ).fetchall()
        return {c: (i, p) for c, i, p in rows}

    def largest_classes(self, limit: int = 1, label_set: str = "imagenet1k") -> list[tuple[int, int]]:
        """[(label_index, images)] of the classes of `label_set` with the most labelled images."""
        return self.con.execute(
            """SELECT label_index, count(*) AS n FROM images WHERE label_set = ?
                                   GROUP BY label_index ORDER BY n DESC, label_index LIMIT ?""",
            [label_set, limit],
        ).fetchall()

    def sample_predictions(self, model_key: str, n: int) -> list[dict]:
        """n images of `model_key` spread evenly over the store (by path), with their top-5 and label."""
        return self._dicts(
            """WITH ranked AS (
                   SELECT i.image_id, i.path, i.label_set, i.label_index, i.label_name, p.top5_index, p.top5_prob,
                          p.true_rank, row_number() OVER (ORDER BY i.path) AS r, count(*) OVER () AS total
                   FROM predictions p JOIN images i USING (image_id) WHERE p.model_key = ?)
               SELECT image_id, path, label_set, label_index, label_name, top5_index, top5_prob, true_rank FROM ranked
               WHERE (r - 1) % greatest(total // ?, 1) = 0 ORDER BY path LIMIT ?""",
            [model_key, n, n],
        )

    def error_rates(self, label_set: str = "imagenet1k") -> dict[str, dict]:
        """{model_key: {labelled, top1_error, top5_error, median_true_rank}} of models with labelled
        images of `label_set` (its images whose labels are or map to ImageNet classes)."""
        rows = self._dicts(f"SELECT * FROM ({ERROR_RATES}) WHERE label_set = $s", {"s": label_set})
        return {row.pop("model_key"): {k: v for k, v in row.items() if k != "label_set"} for row in rows}

    def top1_error(self, model_key: str) -> float | None:
        """Top-1 error of `model_key` on the store's labelled images (None without any)."""
        return self.error_rates().get(model_key, {}).get("top1_error")

    def labelled_predictions(self, model_key: str) -> list[tuple[str, int, int]]:
        """[(image_id, true class, predicted class)] of `model_key`'s imagenet1k images, by class then id."""
        return self.con.execute(
            """SELECT image_id, label_index, predicted_index FROM labelled_predictions
               WHERE model_key = ? AND label_set = 'imagenet1k' ORDER BY label_index, image_id""",
            [model_key],
        ).fetchall()

    def labelled_images(self, model_key: str, label_set: str) -> list[tuple[str, int]]:
        """[(image_id, class index)] of the images labelled in `label_set` with vectors of `model_key`,
        by class then id."""
        return self.con.execute(
            """SELECT i.image_id, i.label_index FROM images i WHERE i.label_set = ? AND EXISTS
                   (SELECT 1 FROM batch_images b WHERE b.model_key = ? AND b.image_id = i.image_id)
               ORDER BY i.label_index, i.image_id""",
            [label_set, model_key],
        ).fetchall()

    def misclassified(self, model_key: str, label_set: str = "imagenet1k") -> list[tuple]:
        """(image_id, path, true, predicted, predicted prob, true rank, true prob) of top-1 failures on
        `label_set`'s images, worst first (true: the label's index in its set)."""
        return self.con.execute(
            """SELECT image_id, path, label_index, predicted_index, top5_prob[1], true_rank, true_prob
               FROM labelled_predictions WHERE model_key = ? AND label_set = ? AND NOT top1_correct
               ORDER BY true_rank DESC NULLS FIRST, image_id""",
            [model_key, label_set],
        ).fetchall()

    def models_with_labelled_vectors(self, label_set: str) -> list[str]:
        """The models with vectors of images labelled in `label_set`, by key."""
        return [r[0] for r in self.con.execute(
            """SELECT DISTINCT x.model_key FROM batch_images x JOIN images i USING (image_id)
               WHERE i.label_set = ? ORDER BY 1""", [label_set]).fetchall()]  # fmt: skip

    def class_image_counts(self, model_key: str, label_set: str = "imagenet1k") -> dict[int, int]:
        """{class index: images of `label_set` with predictions by `model_key`}."""
        return dict(
            self.con.execute(
                """SELECT i.label_index, count(*) FROM predictions p JOIN images i USING (image_id)
               WHERE p.model_key = ? AND i.label_set = ? GROUP BY 1""",
                [model_key, label_set],
            ).fetchall()
        )

    def labelled_vector_arrays(self, model_key: str, layer: str, label_set: str = "imagenet1k"):
        """(image ids, class indices) as numpy arrays: of the images labelled in `label_set` with a vector
        of `model_key`/`layer`."""
        got = self.con.execute(
            f"SELECT x.image_id, i.label_index {_LABELLED_VECTORS}", [model_key, layer, label_set]
        ).fetchnumpy()
        return got["image_id"], got["label_index"]

    def labels_digest(self, model_key: str, layer: str, label_set: str = "imagenet1k") -> list[str]:
        """An order-independent digest of (image, label) of a layer's vectors labelled in `label_set`."""
        row = self.con.execute(
            f"SELECT count(*), bit_xor(hash(x.image_id, i.label_index)) {_LABELLED_VECTORS}",
            [model_key, layer, label_set],
        ).fetchall()[0]
        return [str(v) for v in row]

    # -- label sets (tables label_sets, labels) ------------------------------------------------
    def label_sets(self) -> list[dict]:
        """Every label set: its name, kind, labels, and labelled images, by name."""
        return self._dicts(
            """SELECT s.label_set, s.kind, (SELECT count(*) FROM labels l WHERE l.label_set = s.label_set) AS labels,
                      (SELECT count(*) FROM images i WHERE i.label_set = s.label_set) AS images
               FROM label_sets s ORDER BY s.label_set"""
        )

    def label_names(self, label_set: str) -> list[str]:
        """The names of `label_set` in index order ([] for an unknown set)."""
        return [r[0] for r in self.con.execute(
            "SELECT name FROM labels WHERE label_set = ? ORDER BY label_index", [label_set]).fetchall()]  # fmt: skip

    def label_ids(self, label_set: str) -> dict[int, str]:
        """{index: id} of the labels of `label_set` that have an id (a THINGS unique id, a synset)."""
        return dict(self.con.execute(
            "SELECT label_index, label_id FROM labels WHERE label_set = ? AND label_id IS NOT NULL", [label_set]
        ).fetchall())  # fmt: skip

    def custom_label_names(self) -> dict[str, list[str]]:
        """{label set: names in index order} of every set but imagenet1k."""
        out: dict[str, list[str]] = {}
        for label_set, name in self.con.execute(
            "SELECT label_set, name FROM labels WHERE label_set <> 'imagenet1k' ORDER BY label_set, label_index"
        ).fetchall():
            out.setdefault(label_set, []).append(name)
        return out

    def add_labels(
        self,
        label_set: str,
        rows: list[tuple[int, str, str | None, str | None]],
        classes: dict[int, list[int]] | None = None,
    ) -> None:
        """Make `label_set` (kind names) if new and add its new labels (index, name, id, category), with
        the ImageNet classes each stands for (`classes`: label index -> class indices, where it maps)."""
        self.con.execute("INSERT INTO label_sets (label_set, kind) VALUES (?, 'names') ON CONFLICT DO NOTHING",
                         [label_set])  # fmt: skip
        if rows:
            self.con.executemany(
                "INSERT INTO labels (label_set, label_index, name, label_id, category) VALUES (?, ?, ?, ?, ?)",
                [[label_set, *r] for r in rows],
            )
        mapped = [[label_set, i, c] for i, cs in (classes or {}).items() for c in cs]
        if mapped:
            self.con.executemany("INSERT INTO label_classes VALUES (?, ?, ?) ON CONFLICT DO NOTHING", mapped)

    def label_class_map(self) -> dict[tuple[str, int], list[int]]:
        """{(label set, label index): ImageNet class indices} of every label of another set that maps."""
        out: dict[tuple[str, int], list[int]] = {}
        for s, i, c in self.con.execute(
            "SELECT label_set, label_index, class_index FROM label_classes ORDER BY ALL"
        ).fetchall():
            out.setdefault((s, i), []).append(c)
        return out

    def mapped_labels(self, label_set: str) -> int:
        """How many labels of `label_set` map to ImageNet classes."""
        return self.con.execute(
            "SELECT count(DISTINCT label_index) FROM label_classes WHERE label_set = ?", [label_set]
        ).fetchall()[0][0]

    def choose_label_set(self, label_set: str | None) -> str:
        """`label_set` if the store knows it; else imagenet1k when it labels images here (or nothing is
        labelled), else the only other set that does (several: a NotFoundError naming them)."""
        from embstore.errors import NotFoundError, did_you_mean

        if label_set is not None:
            known = [s["label_set"] for s in self.label_sets()]
            if label_set not in known:
                hint = did_you_mean(label_set, known)
                raise NotFoundError(f"no label set '{label_set}' in this store; it has {', '.join(known)}.{hint}")
            return label_set
        used = self.labelled_sets()
        if not used or used[0] == "imagenet1k":
            return "imagenet1k"
        if len(used) > 1:
            raise NotFoundError(
                f"this store's images are labelled in several label sets ({', '.join(used)}); choose one with --labels"
            )
        return used[0]

    def labelled_sets(self) -> list[str]:
        """The label sets that label at least one image, imagenet1k first."""
        rows = self.con.execute(
            "SELECT DISTINCT label_set FROM images WHERE label_set IS NOT NULL ORDER BY label_set <> 'imagenet1k', 1"
        ).fetchall()
        return [r[0] for r in rows]

    def images_with_vectors(self, model_key: str, image_ids: list[str]) -> set[str]:
        """Those of `image_ids` that have at least one stored vector of `model_key`."""
        return {
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT image_id FROM batch_images WHERE model_key = ? AND list_contains(?, image_id)",
                [model_key, list(image_ids)],
            ).fetchall()
        }

    def find_image(self, path: str | None = None, id_prefix: str | None = None) -> list[str]:
        """Image ids stored at `path`, or whose id starts with `id_prefix`."""
        if path is not None:
            return [r[0] for r in self.con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchall()]
        return [
            r[0]
            for r in self.con.execute(
                "SELECT image_id FROM images WHERE starts_with(image_id, ?)", [id_prefix]
            ).fetchall()
        ]

    def image_details(self, model_key: str, image_ids: list[str]) -> dict[str, tuple]:
        """{image_id: (path, label name, top-1 class index by `model_key`)}."""
        return {
            i: (p, n, top)
            for i, p, n, top in self.con.execute(
                """SELECT i.image_id, i.path, i.label_name, p.top5_index[1] FROM images i
               LEFT JOIN predictions p ON p.image_id = i.image_id AND p.model_key = ?
               WHERE list_contains(?, i.image_id)""",
                [model_key, list(image_ids)],
            ).fetchall()
        }

    def model_origin(self, model_key: str) -> tuple[str, str, str, str | None]:
        """(name, weights tag, weights sha256, weights option of the newest run) of a stored model."""
        name, tag, sha, config = self.con.execute(
            """SELECT m.name, m.weights, m.weights_sha256, r.config FROM models m
               LEFT JOIN runs r ON r.model_key = m.model_key WHERE m.model_key = ?
               ORDER BY r.started_at DESC LIMIT 1""",
            [model_key],
        ).fetchall()[0]
        return name, tag, sha, json.loads(config).get("weights") if config else None

    def running_runs(self) -> int:
        return self.con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchall()[0][0]

    def tables(self) -> list[tuple[str, str]]:
        return [(name, kind.lower().replace("base table", "table")) for name, kind in self.con.execute(
            """SELECT table_name, table_type FROM information_schema.tables
               WHERE table_schema = 'main' ORDER BY table_name""").fetchall()]  # fmt: skip

    def summary(self) -> dict:
        """Counts of images, models, vectors, files, runs and errors, plus one row per model with its errors."""
        one = lambda sql: self.con.execute(sql).fetchall()[0][0]  # noqa: E731
        out = {
            "images": one("SELECT count(*) FROM images"),
            "labelled": one("SELECT count(*) FROM images WHERE label_index IS NOT NULL"),
            "models": one("SELECT count(*) FROM models"),
            "vectors": one("SELECT coalesce(sum(n_rows), 0)::BIGINT FROM table_files"),
            "files": one("SELECT count(*) FROM table_files"),
            "table_version": self.table_version(),
            "runs": one("SELECT count(*) FROM runs"),
            "errors": one("SELECT count(*) FROM ingest_errors"),
        }
        out["label_sets"] = {s["label_set"]: s["images"] for s in self.label_sets() if s["images"]}
        out["per_model"] = [
            (m["model_key"], m["layers"], m["images"], m["top1_error"], m["top5_error"]) for m in self.models_overview()
        ]
        return out

    def image_sources(self) -> list[tuple[str, str | None, str, str | None]]:
        """(path, raw label, source, extra JSON) of every stored image, by path."""
        return self.con.execute("SELECT path, label_raw, source, extra FROM images ORDER BY path").fetchall()

    def image_labels(self, image_ids: list[str]) -> dict[str, tuple[str, int]]:
        """{image_id: (label set, class index)} of those of `image_ids` that are labelled."""
        return {
            i: (s, c)
            for i, s, c in self.con.execute(
                """SELECT image_id, label_set, label_index FROM images
                   WHERE list_contains(?, image_id) AND label_index IS NOT NULL""",
                [list(image_ids)],
            ).fetchall()
        }

    def image_paths(self, image_ids: list[str]) -> dict[str, str]:
        return dict(
            self.con.execute(
                "SELECT image_id, path FROM images WHERE list_contains(?, image_id)", [list(image_ids)]
            ).fetchall()
        )

    def insert_images(self, table) -> None:
        self.con.register("_images", table)
        try:
            self.con.execute(
                """INSERT INTO images (image_id, path, file_size, file_mtime, width, height, mode, label_raw,
                                       label_set, label_wnid, label_index, label_name, source, extra)
                   SELECT image_id, path, file_size, file_mtime, width, height, mode, label_raw,
                          label_set, label_wnid, label_index, label_name, source, extra::JSON FROM _images
                   ON CONFLICT DO NOTHING"""
            )
        finally:
            self.con.unregister("_images")

    def insert_predictions(self, table) -> None:
        self.con.register("_preds", table)
        try:
            self.con.execute(
                """INSERT INTO predictions SELECT model_key, image_id, top5_index::INTEGER[5], top5_prob::FLOAT[5],
                          true_rank, true_prob, run_id FROM _preds ON CONFLICT DO NOTHING"""
            )
        finally:
            self.con.unregister("_preds")

    def insert_errors(self, run_id: str, errors: list[tuple[str, str]]) -> None:
        """Record why each path failed, replacing what an earlier run recorded for it: one row per path
        that fails now (a rerun over the same bad files adds none)."""
        if errors:
            self.forget_errors([p for p, _ in errors])
            self.con.executemany(
                "INSERT INTO ingest_errors (run_id, path, reason) VALUES (?, ?, ?)",
                [[run_id, p, r] for p, r in errors],
            )

    def forget_errors(self, paths: list[str]) -> None:
        """Drop the error rows of paths that now load (or fail anew)."""
        if paths:
            self.con.execute("DELETE FROM ingest_errors WHERE list_contains(?, path)", [list(paths)])

    # -- vector batches and the pinned activations table ----------------------------------------
    def record_batches(self, model_key: str, run_id: str, batches: list[tuple[str, list[str], list[str], int]]) -> None:
        """Record committed batches [(batch_id, layers, image_ids, encoded bytes)] of `model_key`."""
        import pyarrow as pa

        self.con.executemany(
            """INSERT INTO vector_batches (batch_id, model_key, run_id, layers, n_images, n_bytes)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [[b, model_key, run_id, layers, len(ids), n_bytes] for b, layers, ids, n_bytes in batches],
        )
        rows = pa.table(
            {
                "model_key": pa.array([model_key] * sum(len(ids) for _, _, ids, _ in batches), pa.string()),
                "image_id": pa.array([i for _, _, ids, _ in batches for i in ids], pa.string()),
                "batch_id": pa.array([b for b, _, ids, _ in batches for _ in ids], pa.string()),
            }
        )
        self.con.register("_batch_images", rows)
        try:
            self.con.execute("INSERT INTO batch_images SELECT model_key, image_id, batch_id FROM _batch_images")
        finally:
            self.con.unregister("_batch_images")

    def pin_table(self, version: int, files_table) -> None:
        """Make `files_table` (rel_path, model_key, layer, n_rows, n_bytes), the data files of Delta
        version `version`, what readers read."""
        self.con.register("_files", files_table)
        try:
            self.con.execute("DELETE FROM table_files")
            self.con.execute("INSERT INTO table_files SELECT rel_path, model_key, layer, n_rows, n_bytes FROM _files")
        finally:
            self.con.unregister("_files")
        self.con.execute("DELETE FROM table_state")
        self.con.execute("INSERT INTO table_state (version) VALUES (?)", [version])

    def table_version(self) -> int | None:
        rows = self.con.execute("SELECT version FROM table_state").fetchall()
        return int(rows[0][0]) if rows else None

    def pinned_files(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT rel_path FROM table_files ORDER BY rel_path").fetchall()]

    def pinned_file_rows(self) -> list[tuple[str, str, str, int]]:
        """[(rel_path, model_key, layer, n_rows)] of every pinned file."""
        return self.con.execute(
            "SELECT rel_path, model_key, layer, n_rows FROM table_files ORDER BY rel_path"
        ).fetchall()

    def batch_ids(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT batch_id FROM vector_batches").fetchall()}

    def expected_rows(self) -> dict[tuple[str, str], int]:
        """{(model_key, layer): vectors the recorded batches hold}."""
        rows = self.con.execute(
            """SELECT b.model_key, l.layer, sum(b.n) FROM (
                   SELECT x.model_key, x.batch_id, count(*) AS n, any_value(v.layers) AS layers
                   FROM batch_images x JOIN vector_batches v USING (batch_id) GROUP BY ALL) b,
               unnest(b.layers) AS l(layer) GROUP BY ALL"""
        ).fetchall()
        return {(m, layer): int(n) for m, layer, n in rows}

    def pinned_rows(self) -> dict[tuple[str, str], int]:
        """{(model_key, layer): vectors in the pinned files}."""
        rows = self.con.execute("SELECT model_key, layer, sum(n_rows) FROM table_files GROUP BY ALL").fetchall()
        return {(m, layer): int(n) for m, layer, n in rows}

    def images_of_layer(self, model_key: str, layer: str) -> set[str]:
        return {
            r[0]
            for r in self.con.execute(
                f"SELECT image_id FROM ({_STORED}) WHERE layer = ?", [model_key, layer]
            ).fetchall()
        }

    def forget_images(self, model_key: str, image_ids: list[str]) -> None:
        """Forget every stored vector of `image_ids` for `model_key`, so a later ingest stores them again."""
        self.con.execute(
            "DELETE FROM batch_images WHERE model_key = ? AND list_contains(?, image_id)", [model_key, image_ids]
        )

    def layer_fingerprint(self, model_key: str, layer: str) -> str:
        """SHA-256 of the batches holding a layer and its pinned row count: it changes whenever the
        layer's vectors do, and not when compaction merely rewrites their files."""
        row = self.con.execute(
            """SELECT (SELECT list(batch_id ORDER BY batch_id) FROM vector_batches
                       WHERE model_key = $m AND list_contains(layers, $l)),
                      (SELECT sum(n_rows) FROM table_files WHERE model_key = $m AND layer = $l)""",
            {"m": model_key, "l": layer},
        ).fetchall()[0]
        return hashlib.sha256(json.dumps([row[0] or [], int(row[1] or 0)]).encode()).hexdigest()

    def layer_files(self, model_key: str, layer: str) -> list[tuple[str, int]]:
        """[(rel_path, n_rows)] of one model layer's pinned files, in path order."""
        return self.con.execute(
            "SELECT rel_path, n_rows FROM table_files WHERE model_key = ? AND layer = ? ORDER BY rel_path",
            [model_key, layer],
        ).fetchall()

    def legacy_files(self) -> list[tuple[str, str, str, str, str, str, str]]:
        """(file_id, model_key, name, weights, layer, rel_path, run_id) of a pre-version-6 store's files."""
        return self.con.execute(
            """SELECT f.file_id, f.model_key, m.name, m.weights, f.layer, f.rel_path, f.run_id
               FROM legacy_activation_files f JOIN models m USING (model_key) ORDER BY f.model_key, f.rel_path"""
        ).fetchall()

    def legacy_image_layers(self) -> list[tuple[str, str, str, list[str]]]:
        """(model_key, run_id, image_id, layers) of a pre-version-6 store's vectors, per image and run."""
        return self.con.execute(
            """SELECT f.model_key, f.run_id, x.image_id, list(x.layer ORDER BY x.layer) AS layers
               FROM legacy_activation_index x JOIN legacy_activation_files f USING (file_id) GROUP BY ALL"""
        ).fetchall()

    def drop_legacy_files(self) -> None:
        self.con.execute("DROP TABLE legacy_activation_index")
        self.con.execute("DROP TABLE legacy_activation_files")

    # -- store settings ----------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        """A store setting (None when unset, or in a catalog older than version 8)."""
        import duckdb

        try:
            rows = self.con.execute("SELECT value FROM store_settings WHERE key = ?", [key]).fetchall()
        except duckdb.CatalogException:
            return None
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO store_settings VALUES (?, ?)", [key, value])

    def has_legacy_files(self) -> bool:
        """Whether the catalog still holds the Parquet registry of a store made before version 6."""
        return bool(
            self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'legacy_activation_files'"
            ).fetchall()[0][0]
        )

    # -- overviews (report) ----------------------------------------------------------------
    def models_overview(self) -> list[dict]:
        """One dict per model: identity, preprocessing, layer / image / vector counts, top-1 / top-5 error."""
        return self._dicts(
            """SELECT m.model_key, m.source, m.weights, left(m.weights_sha256, 12) AS weights_sha,
                      format('resize {} · crop {} · {}', m.resize, m.crop, m.interpolation) AS preprocessing,
                      (SELECT count(*) FROM layers l WHERE l.model_key = m.model_key) AS layers,
                      coalesce(p.images, 0) AS images, coalesce(v.vectors, 0) AS vectors,
                      e.labelled, e.top1_error, e.top5_error
               FROM models m
               LEFT JOIN (SELECT model_key, count(*) AS images FROM predictions GROUP BY model_key) p USING (model_key)
               LEFT JOIN (SELECT * FROM ("""
            + ERROR_RATES
            + """) WHERE label_set = 'imagenet1k') e USING (model_key)
               LEFT JOIN (SELECT model_key, sum(n_rows) AS vectors FROM table_files GROUP BY model_key) v
                      USING (model_key)
               ORDER BY m.model_key"""
        )

    def layers_overview(self, model_key: str) -> list[dict]:
        return self._dicts(
            """SELECT l.ord, l.layer, l.kind, l.channels, l.reduction, coalesce(c.vectors, 0) AS vectors
               FROM layers l LEFT JOIN (SELECT layer, sum(n_rows) AS vectors FROM table_files
                                        WHERE model_key = $m GROUP BY layer) c USING (layer)
               WHERE l.model_key = $m ORDER BY l.ord""",
            {"m": model_key},
        )

    def runs_overview(self, limit: int = 200) -> list[dict]:
        return self._dicts(
            """SELECT run_id, model_key, status, strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started,
                      round(epoch(finished_at - started_at), 1) AS seconds, n_images, n_done, n_skipped,
                      n_errors, n_duplicates, message
               FROM runs ORDER BY started_at DESC, run_id LIMIT ?""",
            [limit],
        )

    def errors_overview(self, limit: int = 100) -> tuple[list[dict], list[dict]]:
        """(count per reason, newest `limit` errors)."""
        by_reason = self._dicts(
            """SELECT reason, count(*) AS images FROM ingest_errors GROUP BY reason
                                   ORDER BY images DESC, reason LIMIT ?""",
            [limit],
        )
        newest = self._dicts(
            """SELECT strftime(logged_at, '%Y-%m-%d %H:%M:%S') AS logged, run_id, path, reason
                                FROM ingest_errors ORDER BY logged_at DESC, path LIMIT ?""",
            [limit],
        )
        return by_reason, newest

    # -- browsing (embstore serve) ---------------------------------------------------------
    def labelled_classes(self, label_set: str) -> list[dict]:
        """label_index, name and images of every class of `label_set` that labels an image, by name."""
        return self._dicts(
            """SELECT label_index, any_value(label_name) AS name, count(*) AS images FROM images
               WHERE label_set = ? AND label_index IS NOT NULL GROUP BY label_index ORDER BY name, label_index""",
            [label_set],
        )

    def class_images(self, label_set: str, label_index: int, limit: int) -> tuple[int, list[dict]]:
        """(how many images `label_set` labels as class `label_index`, the first `limit` by id)."""
        where = "FROM images WHERE label_set = ? AND label_index = ?"
        n = self.con.execute(f"SELECT count(*) {where}", [label_set, label_index]).fetchall()[0][0]
        first = self._dicts(f"SELECT image_id, path {where} ORDER BY image_id LIMIT ?", [label_set, label_index, limit])
        return n, first

    def image_card(self, image_id: str) -> dict | None:
        """The catalog's row of one image (path, size, label), or None."""
        rows = self._dicts(
            """SELECT image_id, path, width, height, label_set, label_index, label_name, label_raw, source
               FROM images WHERE image_id = ?""",
            [image_id],
        )
        return rows[0] if rows else None

    def image_predictions(self, image_id: str) -> list[dict]:
        """Every model's top-5 (class indices, probabilities) and true-class rank of one image."""
        return self._dicts(
            """SELECT model_key, top5_index, top5_prob, true_rank, true_prob FROM predictions
               WHERE image_id = ? ORDER BY model_key""",
            [image_id],
        )

    def class_failures(self, model_key: str, label_set: str, label_index: int, limit: int) -> list[dict]:
        """`model_key`'s top-1 failures on one class, worst first (seed 000 table 1), with their top-5."""
        return self._dicts(
            """SELECT image_id, path, true_rank, true_prob, top5_index, top5_prob FROM labelled_predictions
               WHERE model_key = ? AND label_set = ? AND label_index = ? AND NOT top1_correct
               ORDER BY true_rank DESC NULLS FIRST, image_id LIMIT ?""",
            [model_key, label_set, label_index, limit],
        )

    def _dicts(self, sql: str, params=None) -> list[dict]:
        return dict_rows(self.con.execute(sql, params or []))
