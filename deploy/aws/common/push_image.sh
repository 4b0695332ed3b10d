#!/usr/bin/env bash
# Builds the project's image from the Dockerfile next to the module's app.py (a dataFile in the
# SeedFarmer bundle) and pushes it to the module's ECR repository, unless the tag is there
# already: the tag is a hash of the image's inputs, so unchanged sources are not rebuilt.
#
#   bash deploy/aws/common/push_image.sh OUTPUTS_FILE IMAGE_STACK
#
# OUTPUTS_FILE is what `cdk deploy --outputs-file` wrote for IMAGE_STACK (RepositoryName,
# ImageUri). Runs from the module directory, in CodeBuild (docker, aws and python on the PATH).
set -euo pipefail
outputs=$1
stack=$2
read -r repository image < <(python - "$outputs" "$stack" <<'PY'
import json, sys
found = json.load(open(sys.argv[1]))[sys.argv[2]]
print(found["RepositoryName"], found["ImageUri"])
PY
)
tag=${image##*:}
registry=${image%%/*}
if aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$tag" \
    >/dev/null 2>&1; then
  echo "push_image: $image is in the repository already"
  exit 0
fi
aws ecr get-login-password | docker login --username AWS --password-stdin "$registry"
docker build --file Dockerfile --tag "$image" .
docker push "$image"
