"""The runtime room: where and how tensors are computed, for any model or method.

`devices` (which device, host/device copies), `threads` (how many CPU threads, given what else runs),
`memory` (recognising and giving back memory), `tuning` (tile and chunk sizes), `blocks` (the unit of
output every method yields) and `tiler` (slabs and in-plane tiles with halos around any predictor).
It knows nothing of CycleINR: the model package calls into it, never the other way round. Importing this
package does not import torch; its modules that need torch import it themselves.
"""
