"""The model, whatever the engine: its config and presets, the sources it opens from
(preset, HF directory, GGUF file, packaged model, HF cache), the weight layout every engine
converts and how it splits over tensor-parallel ranks (`shards`), and the tokenizers. Nothing
here runs a forward pass."""
