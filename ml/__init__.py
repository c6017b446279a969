"""Offline ML and data tooling: trace loading, risk-model training and evaluation.

Never deployed and never imported by app.py: the risk scorer Lambda only unpickles the artifact that
``make train`` writes, with the scikit-learn of the layer in layers/.
"""
