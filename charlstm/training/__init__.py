"""Training a character LSTM on reviews: the data (load, split, pack) and the Trainer around it."""
