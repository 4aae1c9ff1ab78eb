# Copied from assist-iot/fl_local_operations (release 1.1.0, commit 2b8aad5e3068c246f4969c213190fc57691f2bc6),
# Apache License 2.0 (../LICENSE-aeros). The repository calls, verbatim: `BasicModelLoader.check_library`,
# the HTTP branch of `BasicModelLoader.load` and `check_loading_path` (application/additional/utils.py; the
# other branch reads the local operations' own database), and the download in
# `TrainingTransformationLoader.load_transformation` (application/additional/object_loaders.py; its
# zipimport/dill step loads aerOS's compiled transformation modules, which need Python 3.8).
import os
import shutil
from logging import INFO, log
from zipfile import ZipFile

import requests

REPOSITORY_ADDRESS = os.environ["REPOSITORY_ADDRESS"]


class BasicModelLoader:
    temp_dir = "temp"

    def __init__(self, rep_name=REPOSITORY_ADDRESS):
        self.rep_name = rep_name

    def check_library(self, model_name, model_version):
        with requests.get(f"{self.rep_name}/model/meta",
                          params={"model_name": model_name,
                                  "model_version": model_version}) \
                as r:
            return r.json()["meta"]["library"]

    def check_loading_path(self, temp):
        '''Checks how nested was the zipped file in order to load it correctly'''
        nested_files = os.listdir(temp)
        log(INFO,
            f'In model directory there are following files {nested_files}')
        if len(nested_files) == 1 and os.path.isdir(os.path.join(temp, nested_files[0])):
            return self.check_loading_path(os.path.join(temp, nested_files[0]))
        else:
            return temp

    def load(self, model_name, model_version):
            with requests.get(f"{self.rep_name}/model"
                              f"/{model_name}/{model_version}",
                              stream=True) as r:
                with open(f'{self.temp_dir}.zip', 'wb') as f:
                    shutil.copyfileobj(r.raw, f)
            with ZipFile(f'{self.temp_dir}.zip', 'r') as zipObj:
                # Extract all the contents of zip file in current directory
                zipObj.extractall(f'{self.temp_dir}')


class TrainingTransformationLoader:
    temp_dir = "temp"
    local_files = os.path.join("application", "local_cache", "transformations")

    def __init__(self, rep_name=REPOSITORY_ADDRESS):
        self.rep_name = rep_name

    def download_transformation(self, id):
        ephem_path = f'{self.temp_dir}.zip'
        with requests.get(f"{self.rep_name}/transformation"
                          f"/{id}", stream=True) as r:
            with open(ephem_path, 'wb') as f:
                shutil.copyfileobj(r.raw, f)
        # First we extract all the downloaded files to the cache dir
        with ZipFile(ephem_path, 'r') as zipObj:
            # Extract all the contents of zip file in current transformations directory
            zipObj.extractall(self.local_files)
