"""Behaviour representations learned with torch: a sequence encoder trained on next-item prediction
(`sequence`) and a Mult-DAE / Mult-VAE over the users x items matrix (`autoencoder`).

Both share `training.Trainer` (seeds, early stopping on a held-out slice of events, progress, autocast,
out-of-memory retry with smaller batches) and `defaults` (sizes that work from 1k to 10M users). Their
weights travel in the saved model's arrays.safetensors (`featurizer.<name>.weights.*`), so `assign`
and `predict` encode new users with the trained encoder.
"""
