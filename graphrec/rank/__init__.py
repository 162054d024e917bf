"""The ranking stage: homepage CTR ranker features, model and artifact (built on the embeddings in the store)."""
