import torch

from models.tabular import (
    Autoencoder,
    FraudClassifier,
    FraudScorer,
    TabularConfig,
    TabularPreprocessor,
)


def _preprocessor() -> TabularPreprocessor:
    numeric = torch.tensor([[1.0, 10.0], [3.0, 1000.0], [5.0, 100.0]])
    return TabularPreprocessor.fit(numeric, torch.tensor([False, True]), (3,))


def test_preprocessor_standardises_logs_and_one_hot_encodes() -> None:
    pre = _preprocessor()
    out = pre(torch.tensor([[3.0, 100.0]]), torch.tensor([[2]]))
    assert out.shape == (1, 2 + 3)
    # column 0 is the training mean (3.0) -> 0 after standardising
    assert abs(out[0, 0].item()) < 1e-6
    # column 1 is logged: log1p(100) is the mean of the logged training column
    logged = torch.log1p(torch.tensor([10.0, 1000.0, 100.0]))
    expected = (torch.log1p(torch.tensor(100.0)) - logged.mean()) / logged.std()
    assert torch.isclose(out[0, 1], expected, atol=1e-5)
    assert out[0, 2:].tolist() == [0.0, 0.0, 1.0]


def test_scorer_outputs_one_probability_and_one_anomaly_score_per_row() -> None:
    pre = _preprocessor()
    config = TabularConfig(n_numeric=2, category_sizes=(3,))
    classifier = FraudClassifier(pre.out_features, config)
    scorer = FraudScorer(pre, classifier, Autoencoder(pre.out_features, config)).eval()
    probability, anomaly = scorer(torch.rand(7, 2), torch.randint(0, 3, (7, 1)))
    assert probability.shape == anomaly.shape == (7,)
    assert ((probability > 0) & (probability < 1)).all()
    assert (anomaly >= 0).all()


def test_classifier_is_the_seed_64_32_1_network() -> None:
    classifier = FraudClassifier(10, TabularConfig(n_numeric=10, dropout=0.0))
    widths = [layer.out_features for layer in classifier.net if isinstance(layer, torch.nn.Linear)]
    assert widths == [64, 32, 1]
