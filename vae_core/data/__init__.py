"""Tables in, float matrices out (and back): everything about data before the model sees it.

    schema          column kinds, from the Arrow schema and overrides
    statistics      one mergeable streaming pass of per-column statistics
    quantile_map    quantile → normal map with atoms (numeric_transform: quantile)
    standard_map    (x − mean) / std (numeric_transform: standard, pooled)
    encoders        one encoder per column kind
    transform       ColumnTransformer: Arrow ↔ the encoded matrices, and the Spans
    tables          what a user hands us → Arrow
    arrow_values    Arrow arrays → numpy values, checked
"""
