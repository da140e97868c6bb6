# The `local` provider: the instance is this machine, and its "disk" is one directory.
#
# Only built-in resources are used (terraform_data), so `init` downloads nothing and
# the configuration works offline with OpenTofu, Terraform or the embedded engine.
#
# Creating the instance waits `boot_delay` seconds (a simulated boot), then makes the
# directory and writes a marker file in it. Destroying the instance stops the tracker
# stand-in if it still runs and removes the directory, but only a directory that holds
# this environment's marker: a directory runner did not make is never deleted. Both
# are done by instance.sh, run from this folder (the engine's working directory).

terraform {
  required_version = ">= 1.5.0"
}

locals {
  instance_dir = trimsuffix(var.instance_dir, "/")
  marker       = ".runner-instance"
}

resource "terraform_data" "instance" {
  # Another directory is another instance: the old one is destroyed first.
  triggers_replace = [local.instance_dir, var.environment]

  # Destroy-time provisioners may only read `self`: keep what they need here.
  input = {
    dir         = local.instance_dir
    environment = var.environment
    marker      = local.marker
  }

  lifecycle {
    precondition {
      condition     = local.instance_dir != ""
      error_message = "The local provider needs an instance directory (inputs.local.instance_dir, by default build/<env>/instance)."
    }
  }

  provisioner "local-exec" {
    command = "/bin/sh ${path.module}/instance.sh create"
    environment = {
      INSTANCE_DIR = local.instance_dir
      ENVIRONMENT  = var.environment
      MARKER       = local.marker
      BOOT_DELAY   = tostring(var.boot_delay)
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "/bin/sh ${path.module}/instance.sh destroy"
    environment = {
      INSTANCE_DIR = self.input.dir
      ENVIRONMENT  = self.input.environment
      MARKER       = self.input.marker
    }
  }
}
