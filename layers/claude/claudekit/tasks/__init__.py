"""One module per feature: what it asks Claude, and the model of its answer.

Tasks never see events or HTTP; adapters call one task each."""
