# Copied from assist-iot/fl_orchestrator (commit bc2cfadc19dfdd89e48e39b56d96624412f7ad31), Apache License
# 2.0 (../LICENSE-aeros). The repository calls of fl-orchestrator/florchestator.py, verbatim: the GridFS
# read of `download_models` (its /databases route), `getModels_FLRepository`, and the training-id parsing
# of `sendInfoLocalOperation`. `const` is fl-orchestrator/constants.py's FL_REPOSITORY_HOSTNAME/PORT, set
# by the harness; the Flask and notification plumbing around them is left out.
import json
import logging
from random import randint

import gridfs
import pymongo
import requests as req


class const:  # noqa: N801 - the module name florchestator.py uses
    FL_REPOSITORY_HOSTNAME = "localhost"
    FL_REPOSITORY_PORT = 9012


def download_models():
        instance_repository = pymongo.MongoClient(f'mongodb://{const.FL_REPOSITORY_HOSTNAME}/') # type: ignore
        database_repository = instance_repository['repository_grid']
        #Recover list of databases
        dblist_repository = instance_repository.list_database_names()

        data = database_repository.fs.files.find_one({'filename': 'model/classification/base2'})

        my_id = data['_id'] # type: ignore

        #db = client.repository
        db_grid = instance_repository.repository_grid
        fs = gridfs.GridFS(db_grid)

        outputdata = fs.get(my_id).read()
        return outputdata


def getModels_FLRepository():
        status = False
        query_models = req.get(f'http://{const.FL_REPOSITORY_HOSTNAME}:{const.FL_REPOSITORY_PORT}/model/')
        if (query_models.status_code == 200):
            status = True

            #sendNotification('SUCCESS', 'Models retrieved from Repository', json.dumps(json.loads(query_models.text)))

            response = json.loads(query_models.text)
            
            return response
        return False, []


def new_training_id():
        list_trainging_id = req.get(f'http://{const.FL_REPOSITORY_HOSTNAME}:{const.FL_REPOSITORY_PORT}/training-results')
        idsList = []
        res_json = list_trainging_id.json()
        if(len(res_json)>0):
            for ids in res_json:
                idsList.append(int(ids['training_id']))

            n_training_id = randint(0,100)
            while n_training_id in idsList:
                n_training_id = randint(0,100)
        else:
            n_training_id = randint(0,100)
        return n_training_id, idsList
