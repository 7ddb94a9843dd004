import pytest

from deepapps.core.data.class_weights import class_weights
from deepapps.core.errors import ConfigError


def test_balanced_and_sqrt_weights_follow_the_train_counts():
    assert class_weights(None, [90, 10]) is None
    assert class_weights("balanced", [90, 10]) == pytest.approx([100 / 180, 100 / 20])
    assert class_weights("sqrt", [90, 10]) == pytest.approx([(100 / 180) ** 0.5, 5 ** 0.5])
    assert class_weights("balanced", [4, 0])[1] == pytest.approx(2.5)  # an empty class counts as one row


def test_explicit_weights_must_match_the_classes():
    assert class_weights("1,3.5", [5, 5]) == [1.0, 3.5]
    with pytest.raises(ConfigError, match="3 comma-separated numbers"):
        class_weights("1,2", [1, 2, 3])
    with pytest.raises(ConfigError, match="class_weights abc"):
        class_weights("abc", [1, 2])
