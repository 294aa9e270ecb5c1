"""``tfds.testing.mock_data`` set up for the input pipeline: what tests use.

tfds's mock replaces a dataset's records by random examples of the real
feature shapes, but two things the pipeline relies on are left as they are
(tfds 4.9.10): a mocked builder still answers ``is_prepared() == False``, so
``preparation.prepare`` would try to build it, and the mocked data source leaves
``__getitems__`` unbound, so reading a batch of records fails. The tests
patch both here; the pipeline itself knows nothing of mocks.

Under the mock, ``prepare`` counts the mocked records, and the iterators read
random examples (imagenet2012 mock images have random small sizes, which the
recipe resizes). With ``cache=True`` (the default for mnist) the
data is read when the iterator is created, so iterating may continue after
the context has closed.
"""
import contextlib
from unittest import mock

import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources import base as data_sources


def _getitems_one_at_a_time(self, keys):
  return [self[key] for key in keys]


@contextlib.contextmanager
def mock_data(num_examples: int):
  """``num_examples`` random records in every split of every dataset."""
  with tfds.testing.mock_data(num_examples=num_examples), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared",
                        return_value=True), \
      mock.patch.object(data_sources.BaseDataSource, "__getitems__",
                        _getitems_one_at_a_time):
    yield
