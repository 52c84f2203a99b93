"""Multi-run studies: every class normal in turn (class tables) and the paper's ablation of
variants.
"""
