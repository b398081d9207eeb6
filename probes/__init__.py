"""Layer-wise linear probes on activation stores."""
