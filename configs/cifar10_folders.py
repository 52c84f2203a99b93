"""CIFAR-10 from class folders, for the paper's central comparison without tfds.

Where tfds cannot download or build CIFAR-10, the same images exported as PNG files
(`<root>/train/<class>/*.png`, `<root>/test/<class>/*.png`, the ten class names as folder names)
give the same experiment. The protocol is the paper's: one class normal, trained on its training
images (a `data.val_fraction` held out for the threshold), tested on the whole test split with
the other nine classes anomalous. `data.root` is required:

    python train_main.py --config=configs/cifar10_folders.py --config.data.root=/data/cifar10 \\
        --mode=ablation --seeds=2

runs VAE, MHP-WTA-8 and ConAD-8 (eval.variants) for every class with two seeds and writes
`ablation.md` / `.csv` / `.json` / `.png` to the workdir (runs/cifar10_folders); add
`--config.eval.variants=vae,vae-gan,mhp-wta-8,conad-2,conad-4,conad-8,conad-16` for the paper's
whole table. The paper's figures and what this config measured on a development copy:
docs/results.md#cifar-10-one-class-normal-the-papers-ablation.

Image size, model, training settings and the normal class (airplane, each class in turn under
--mode=ablation) are configs/cifar10.py's (read from it, so the two cannot drift apart).
"""

from configs import cifar10


def get_config():
    c = cifar10.get_config()
    c.data.name = "folders"
    c.eval.variants = "vae,mhp-wta-8,conad-8"
    return c
