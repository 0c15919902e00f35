"""Tensor and pipeline parallelism on torch.distributed (gloo on the CPU, NCCL on CUDA).

`group` joins a process group (one line for each way a launch goes wrong) and builds the mesh a
model runs on (TP inside a stage, PP across stages); `launch` spawns the ranks on this host when
torchrun did not; `engine` is the torch engine split over a mesh. The sharding arithmetic is
`engines.model.shards`; the measuring of a distributed run is `profilers.dist_run`.
"""
