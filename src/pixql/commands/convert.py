"""CONVERT USING model [OPTIONS (...)] AS query (also spelled EMBED): the query's rows plus an
embedding column, DuckDB type FLOAT[n], unit length (tasks/embedding.py)."""

import functools

from pixql import cluster as clusters
from pixql import options as opt
from pixql import regions
from pixql.commands.common import PRECISION, answer_rows, image_outputs, on_cluster, refuse_taken_columns
from pixql.errors import PixqlError
from pixql.image_columns import pick_image_col
from pixql.tasks.embedding import EMBEDDING

OPTIONS = {
    "image_col": opt.text(),
    "result_col": opt.text("embedding"),
    "weights": opt.text(),  # a local checkpoint for a base network
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    "precision": PRECISION,
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: unreadable images get a NULL embedding
    **regions.OPTIONS,  # box_col, mask_col, ...: embed regions of the photos
    **clusters.OPTIONS,  # cluster, workers, gpus_per_worker: embed on a Ray cluster
}
CHUNK_ROWS = 4096  # as PREDICT: longer queries stream


def run(engine, statement):
    resolved, given = opt.resolve("CONVERT", statement.options, OPTIONS)
    cluster = clusters.choose(engine, resolved, "CONVERT")
    device = resolved["device"] if cluster is None else "cpu"  # the workers load their own
    embedder = engine.catalog.embedder(statement.model, device, resolved["weights"], resolved["precision"])
    trained = trained_regions(engine, statement.model)
    reader = regions.RegionReader(resolved, model=trained is not None)
    notes = []

    def start(first):
        image_col = pick_image_col(first, resolved["image_col"], "the query")
        refuse_taken_columns("CONVERT", first.columns, [resolved["result_col"]], resolved["result_col"])
        # a model trained on regions embeds them, as its PREDICT reads them, where the query has them
        notes.extend(reader.follow_model(given, trained, first.columns, "CONVERT", statement.model))

        def finish(frame, vectors):
            out, unread = EMBEDDING.columns(frame, vectors, resolved["result_col"])
            return out, unread, frame[image_col]

        def answer(frame, bar=None):
            return finish(frame, embed_rows(embedder, frame, image_col, resolved,
                                            bar if bar is not None else engine.progress, reader))

        if cluster is None:
            return answer
        job = on_cluster(cluster, engine.catalog.embedder_loader(statement.model, resolved["device"],
                                                                 resolved["weights"], resolved["precision"]),
                         functools.partial(embed_on_worker, image_col, reader.resolved),
                         [image_col, *reader.columns(first)], resolved)
        return cluster.answer(job, answer, finish, engine.progress, "embed", reader.count)

    result = answer_rows(engine, statement, start, CHUNK_ROWS, "embed", f"a NULL {resolved['result_col']}",
                         lambda: notes + reader.message("CONVERT"), reader,
                         {resolved["result_col"]: EMBEDDING.vector_type(embedder.dim)})
    # said on the column of a table made of the rows, so that SEARCH IMAGE with another network is refused
    result.info["column_comments"] = {
        resolved["result_col"]: origin_comment(engine.catalog.embedding_origin(statement.model, resolved["weights"]))}
    return result


ORIGIN = "pixql CONVERT: "


def origin_comment(origin):
    """The comment CONVERT's column carries in a table (DuckDB's COMMENT ON COLUMN)."""
    return f"{ORIGIN}embeddings of {origin}"


def trained_regions(engine, model):
    """The region options model `model` was trained with (its manifest's), or None: a base
    network or CLIP was never trained here."""
    try:
        return engine.catalog.manifest(model).get("regions")
    except PixqlError:
        return None


def embed_on_worker(image_col, resolved, embedder, frame):
    """A cluster worker's `embed_rows` of one block of rows (cluster.py)."""
    reader = regions.RegionReader(resolved)
    return embed_rows(embedder, frame, image_col, resolved, False, reader), {"clipped": reader.clipped}


def embed_rows(embedder, frame, image_col, resolved, progress, reader=None, what="the query"):
    """[rows, dim] unit vectors of the frame's images (or regions, through `reader`); NaN rows
    for what on_error='skip' skipped. `what`: the query the rows are, for errors."""
    def compute(paths, on_error):
        return embedder.embed(paths, resolved["batch_size"], progress, on_error=on_error)

    return image_outputs(compute, embedder.dim, frame, image_col, resolved, reader, what)
