// Creates the API's own MongoDB user, with readWrite on the repository databases only, so the API
// never holds the root password. Run once by the official mongo entrypoint from
// /docker-entrypoint-initdb.d/ (first start of an empty data directory, temporary mongod without
// access control). The same file is shipped in helm/flrepository/files/; keep the two identical.
//
// Environment (MONGO_INITDB_* variables are unset by the entrypoint once initialisation is done):
//   MONGO_INITDB_APP_USERNAME, MONGO_INITDB_APP_PASSWORD   the user to create (skipped when unset)
//   MONGO_INITDB_APP_DATABASES   comma-separated databases it may read and write
//                                (default "repository,repository_grid": FLREPO_DB_NAME, FLREPO_GRIDFS_DB_NAME)
const appUser = process.env.MONGO_INITDB_APP_USERNAME;
const appPassword = process.env.MONGO_INITDB_APP_PASSWORD;
if (appUser && appPassword) {
  const databases = (process.env.MONGO_INITDB_APP_DATABASES || "repository,repository_grid")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
  db.getSiblingDB("admin").createUser({
    user: appUser,
    pwd: appPassword,
    roles: databases.map((name) => ({ role: "readWrite", db: name })),
  });
  print(`flrepo: created user ${appUser} with readWrite on ${databases.join(", ")}`);
} else {
  print("flrepo: MONGO_INITDB_APP_USERNAME/PASSWORD not set; no application user created");
}
