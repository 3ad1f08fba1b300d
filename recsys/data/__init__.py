"""Data layer: canonical tables, readers, splits, prepared-dataset files, DataModules.

    schema.py       canonical tables, DatasetMeta, Dataset, Split, DataError (contract)
    history.py      jagged user histories (contract)
    sources.py      raw files from a directory / zip / md5-checked download; file:line parse errors
    movielens.py    ML-100K (GroupLens or RecBole layout), ML-1M, ML-20M readers
    synthetic.py    Zipf-popularity generator with latent-factor ground truth (streams parquet)
    canonical.py    derived columns (text, age rating, buckets), contiguous indices, vocabularies
    splits.py       implicit threshold, k-core, leave-one-out / temporal / random splits
    io.py           save/load prepared datasets and splits (validated parquet)
    text_embed.py   all-MiniLM-L6-v2 item/query embeddings
    prepare.py      read -> filter -> split -> write, cached by config (`python -m recsys.data.prepare`)
    datamodules.py  Lightning DataModules (pairs with negatives; padded sequences)
    two_tower_data.py  next-item batches for the two-tower model
    criteo.py       Criteo display-ads format for the DLRM ranker
"""
