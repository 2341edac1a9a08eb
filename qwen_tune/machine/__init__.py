"""The box's facts: its GPUs through NVML, the cards one can plan for, whether torch can use them."""
