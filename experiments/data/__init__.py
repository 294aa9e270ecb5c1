"""The data: preparing datasets, reading their batches, transforming the images.

* ``datasets.py``: what each dataset is (its recipe) and ``DataConfig``, the
  data config resolved once from ``config.data``;
* ``preparation.py``: ``prepare(data_config)`` builds the tfds array_record
  files (from ``manual_dir`` or a download) and returns a ``DatasetInfo``;
* ``pipeline.py``: ``train_iterator`` and ``eval_iterator``, our index sampler
  loaded by grain (threads, worker processes);
* ``transforms.py``: decoding, augmentation and normalisation of the recipes.
"""
