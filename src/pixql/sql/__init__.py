"""pixql's SQL front end: split a script, parse pixql's statements, pass the rest to DuckDB."""

from pixql.sql.parser import (
    describes_only, keeps_sql, macro_made, nested_statements, parse, parse_script, shared_ctes, split_script,
)
from pixql.sql.statements import (
    BuildModel, Convert, Copy, CreateTableAs, DescribeModel, Detect, DropModel, Evaluate, ExportModel, FitModel, Predict,
    PrintImage, SearchImage, Segment, ShowBaseModels, ShowModels, Sql, Statement,
)

__all__ = [
    "parse", "parse_script", "split_script", "nested_statements", "describes_only", "keeps_sql", "macro_made", "shared_ctes",
    "Statement", "Sql", "Copy", "BuildModel", "FitModel", "Predict", "Detect", "Evaluate", "Convert", "SearchImage",
    "Segment", "PrintImage",
    "ShowModels", "ShowBaseModels", "DescribeModel", "DropModel", "ExportModel", "CreateTableAs",
]
