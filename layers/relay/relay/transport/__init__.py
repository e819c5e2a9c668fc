"""Transport: one pooled session, one retry policy, URL origins, and the requestor that joins them."""
