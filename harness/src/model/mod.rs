//! Models: the crammed BERT and the BERT baselines in tch, one file per architecture, with the
//! reference's state-dict names so checkpoints map onto the PyTorch reference.
