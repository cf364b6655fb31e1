"""Evidence about a real pair: the signature capture format and analysis (capture), the compatibility
matrix (matrix, probe) and the KV dump connector that proves the pulled KV equals what prefill wrote (kv_dump)."""
