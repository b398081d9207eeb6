"""The HDF5 activation store: the contract between the model side and the analysis side (numpy + h5py only)."""
