"""The scalar engine: the forward pass in pure Python (`engine`)."""
