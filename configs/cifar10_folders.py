"""CIFAR-10 from class folders, for the paper's central comparison without tfds.

Where tfds cannot download or build CIFAR-10, the same images exported as PNG files
(`<root>/train/<class>/*.png`, `<root>/test/<class>/*.png`, the ten class names as folder names)
give the same experiment. The protocol is the paper's: one class normal, trained on its training
images (a `data.val_fraction` held out for the threshold), tested on the whole test split with
the other nine classes anomalous.

    python train_main.py --config=configs/cifar10_folders.py --config.data.root=/data/cifar10 \\
        --mode=ablation --seeds=2

runs VAE, MHP-WTA-8 and ConAD-8 (eval.variants) for every class with two seeds and writes
`ablation.md` / `.csv` / `.json` / `.png` to the workdir (runs/cifar10_folders). The paper's means
over the ten classes (three runs each): VAE .610, MHP-WTA-8 .619, ConAD-8 .671; add
`--config.eval.variants=vae,vae-gan,mhp-wta-8,conad-2,conad-4,conad-8,conad-16` for its whole
table (VAE-GAN .609, ConAD-2/4/16 .643/.639/.659).

On the development copy (2,000 training images per class) at 20 epochs and two seeds the means
were VAE .603, MHP-WTA-8 .597, ConAD-8 .596 (docs/results.md, with the per-class table and the
adversarial-balance pilots): the paper's ordering did not appear at that length.

Image size, model and training settings are configs/cifar10.py's (read from it, so the two
cannot drift apart): 32 px RGB, batch 64, latent 64, 8 hypotheses, 50 epochs.
"""

from configs import cifar10


def get_config():
    c = cifar10.get_config()
    c.data.name = "folders"
    c.data.root = ""  # required: --config.data.root=/data/cifar10 (holds train/ and test/)
    c.data.normal_class = "airplane"  # each class in turn under --mode=ablation
    c.eval.variants = "vae,mhp-wta-8,conad-8"
    return c
