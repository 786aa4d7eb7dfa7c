"""The money side: allocation across funding sources, tranches, payment channel, batches, reconciliation."""
