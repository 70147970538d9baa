"""Which stored table column a query's output column is, read from DuckDB's parse tree
(json_serialize_sql): through `*`, aliases, subqueries, WITH and joins, so that what a table's
column says of itself (CONVERT's comment naming the network that made its vectors) still holds
where a query passes the column on unchanged.

Three answers: what the caller's `table_column` says of the stored column where it is passed on
as stored; ABSENT where the relation has no such column (one side of a join); None where it
cannot be told (an expression, a table function, a view, a UNION, columns renamed in bulk): a
caller then knows nothing, and refuses nothing on that account."""

ABSENT = "absent"  # the relation has no column of that name (unlike None: has one, not traced)
_DEEPEST = 16  # nested subqueries and WITH names followed at most (a parse tree is finite; this is a guard)


def origin(node, column, table_column, ctes=None, depth=0):
    """The stored origin of SELECT node `node`'s output column `column`. `table_column(catalog,
    schema, table, column)` answers for a table named in FROM: what the caller wants of that column
    (not ABSENT or None), ABSENT where the table has no such column, or None where it is no table."""
    if node is None or node.get("type") != "SELECT_NODE" or depth > _DEEPEST:
        return None
    # name -> (its query, the names it sees: those of where it is written, not of where it is
    # read, as DuckDB binds it; the entries before it in its WITH, not itself or later ones)
    ctes = dict(ctes or {})
    for entry in (node.get("cte_map") or {}).get("map") or []:
        value = entry.get("value") or {}
        # (WITH x(a, b) AS ...: renamed columns are not followed)
        ctes[entry["key"].lower()] = None if value.get("aliases") else (value.get("query_node"), dict(ctes))
    wanted = column.lower()
    found = []
    for item in node.get("select_list") or []:
        if item["class"] == "STAR":
            if item.get("columns") or item.get("expr") or item.get("replace_list") or item.get("rename_list") \
                    or item.get("qualified_exclude_list"):
                return None  # COLUMNS(...), * REPLACE/RENAME: not followed
            if wanted in (str(name).lower() for name in item.get("exclude_list") or []):
                continue
            found.append(_from(node.get("from_table"), item.get("relation_name") or None, column, table_column,
                               ctes, depth))
        elif item["class"] == "COLUMN_REF":
            names = item["column_names"]
            if (item.get("alias") or names[-1]).lower() == wanted:
                found.append(_from(node.get("from_table"), names[-2] if len(names) > 1 else None, names[-1],
                                   table_column, ctes, depth))
        elif (item.get("alias") or "").lower() == wanted:
            found.append(None)  # computed here: whatever it is, not a stored column
    return _one(found)


def _one(found):
    """The one answer among the candidates that have the column; None where two could be it."""
    present = [answer for answer in found if answer != ABSENT]
    if not present:
        return ABSENT
    return present[0] if len(present) == 1 else None


def _from(source, qualifier, column, table_column, ctes, depth):
    """Where FROM item `source` gets `column` (written `qualifier.column` where qualified)."""
    kind = (source or {}).get("type")
    if kind == "JOIN":
        using = {str(name).lower() for name in source.get("using_columns") or []}
        if qualifier is None and (column.lower() in using or source.get("ref_type") == "NATURAL"):
            return None  # one column made of both sides
        sides = ("left",) if source.get("join_type") in ("SEMI", "ANTI") else ("left", "right")  # (the left's only)
        return _one([_from(source.get(side), qualifier, column, table_column, ctes, depth) for side in sides])
    if kind not in ("BASE_TABLE", "SUBQUERY"):
        return None if qualifier is None else ABSENT if _named_otherwise(source, qualifier) else None
    name = source.get("alias") or (source.get("table_name") if kind == "BASE_TABLE" else "")
    if qualifier is not None and qualifier.lower() != name.lower():
        return ABSENT  # another relation of the FROM clause
    if source.get("column_name_alias"):
        return None  # t(a, b): columns renamed by place
    if kind == "SUBQUERY":
        return origin((source.get("subquery") or {}).get("node"), column, table_column, ctes, depth + 1)
    catalog, schema = source.get("catalog_name") or None, source.get("schema_name") or None
    if catalog is None and schema is None and source["table_name"].lower() in ctes:
        entry = ctes[source["table_name"].lower()]
        return None if entry is None else origin(entry[0], column, table_column, entry[1], depth + 1)
    return table_column(catalog, schema, source["table_name"], column)


def _named_otherwise(source, qualifier):
    alias = (source or {}).get("alias") or ""
    return bool(alias) and alias.lower() != qualifier.lower()
