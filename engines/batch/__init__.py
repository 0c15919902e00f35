"""The batched engine (continuous batching over a paged KV cache), one concept a file:
`request` (a request and its states), `kv_blocks` (the block pool, block tables, prefix cache),
`scheduler` (which tokens each step computes), `paged` (the batched forward pass) and `engine`
(add_request / abort / step())."""
