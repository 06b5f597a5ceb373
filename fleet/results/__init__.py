"""Results: the record, the local store, and the sinks and exporters built on them."""
