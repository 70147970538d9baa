"""The embedding task: a backbone without a head. No labels and no loss; its output is a unit
vector per image (DuckDB `FLOAT[n]`), compared by cosine similarity (a dot product, the vectors
being unit length); its metric is retrieval precision@k.
"""

import numpy as np


class EmbeddingTask:
    name = "embedding"

    @staticmethod
    def vector_type(dim):
        """The DuckDB type of an embedding column."""
        return f"FLOAT[{int(dim)}]"

    @staticmethod
    def column(vectors):
        """A pandas column of fixed-size Arrow lists (DuckDB reads it as FLOAT[n]); NaN rows (an
        unreadable image skipped) are NULL."""
        import pandas as pd
        import pyarrow as pa

        vectors = np.asarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        missing = np.isnan(vectors).any(axis=1)
        flat = pa.array(np.nan_to_num(vectors).ravel(), type=pa.float32())
        array = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(missing))
        return pd.Series(pd.arrays.ArrowExtensionArray(array))

    def columns(self, frame, vectors, result_col):
        """The query's rows plus the embedding column; (frame, positions of NULL rows)."""
        out = frame.copy()
        out[result_col] = self.column(vectors).set_axis(frame.index)
        return out, [i for i, bad in enumerate(np.isnan(vectors).any(axis=1)) if bad]

    @staticmethod
    def similarity(vectors, query):
        """Cosine similarity of each row of `vectors` to `query` (both unit length), at most 1
        (float32 products of a vector with itself round to 1.0000002)."""
        return np.minimum(np.asarray(vectors, dtype=np.float32) @ np.asarray(query, dtype=np.float32), 1.0)

    @staticmethod
    def precision_at_k(queries, query_labels, base, base_labels, k=10):
        """Retrieval quality: for each query vector, the share of its k nearest rows of `base`
        (by cosine) whose label is the query's own; the mean over queries."""
        scores = np.asarray(queries, dtype=np.float32) @ np.asarray(base, dtype=np.float32).T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        base_labels = np.asarray(base_labels)
        hits = base_labels[top] == np.asarray(query_labels)[:, None]
        return float(hits.mean())


EMBEDDING = EmbeddingTask()
