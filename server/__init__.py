"""The firm: report validation, training any scikit-learn classifier, fairness
metrics, firm-side baselines and defences, and the Flower ServerApp."""
