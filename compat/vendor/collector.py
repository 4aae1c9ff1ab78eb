# Copied from assist-iot/fl_training_collector (release 1.1.0, commit 85ede546d90cfe4188dd5c1c8b16678fdf0218a0),
# Apache License 2.0 (../LICENSE-aeros). The repository calls, verbatim: `download_strategy` from
# application/utils.py and the body of `TrainingStrategyWrapper.send_training_results` from
# application/src/strategy_manager.py. Only the module-level names they read are set by the harness
# (REPOSITORY_ADDRESS from application/config.py; `self` is a stand-in holding the wrapper's fields).
import os
import pickle
import shutil
import traceback
from logging import INFO, log

import requests

REPOSITORY_ADDRESS = os.environ["REPOSITORY_ADDRESS"]


def download_strategy(strategy_name: str):
    try:
        with requests.get(f"{REPOSITORY_ADDRESS}/strategy"
                          f"/{strategy_name}",
                          stream=True) as r:
            with open('temp.pkl', 'wb') as f:
                shutil.copyfileobj(r.raw, f)
        with open('temp.pkl', 'rb') as f:
            strategy = pickle.load(f)
        return strategy
    except requests.exceptions.RequestException as e:
        log(INFO, f"Exception while downloading strategy: {e}")
    finally:
        os.remove("temp.pkl")


class TrainingStrategyWrapper:
    """Only what send_training_results reads."""

    def __init__(self, path, model_name, model_version, training_id, configuration_id, strategy_conf):
        self.path, self.model_name, self.model_version = path, model_name, model_version
        self.training_id, self.configuration_id, self.strategy_conf = training_id, configuration_id, strategy_conf

    def send_training_results(self, loss, additional, server_round):
        with open(os.path.join(f"{self.path}", "aggregated-weights.pkl"), 'rb') as f:
            try:
                to_send = {"model_name": f"{self.model_name}",
                           "model_version": f"{self.model_version}",
                           "training_id": f"{self.training_id}",
                           "results": {"rounds": f"{server_round}",
                                       "final_loss": f"{loss}",
                                       **additional,
                                       **self.strategy_conf.dict(exclude_unset=True)},
                           "configuration_id": f"{self.configuration_id}"}
                log(INFO, f"Final results to send look like {to_send}")
                r = requests.post(f"{REPOSITORY_ADDRESS}/training-results",
                                  json=to_send)
                r = requests.put(f"{REPOSITORY_ADDRESS}/training-results"
                                 f"/{self.model_name}/{self.model_version}"
                                 f"/{self.training_id}/{self.configuration_id}",
                                 files={"file": f})
            except requests.exceptions.RequestException as e:
                print(f"Failed to send the training results of job {self.training_id} to "
                      f"repository")
                traceback.print_exc()
