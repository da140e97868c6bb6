# The `lxd` provider: one LXD virtual machine on the local LXD daemon (unix socket),
# as the Torrust Tracker deployer makes it. Requires LXD with a `default` storage pool
# and the `lxdbr0` bridge (`lxd init --auto`), and the terraform-lxd/lxd provider
# (downloaded by `init`).
#
# The VM gets a profile of its own (root disk and network), a memory limit, and
# cloud-init user-data that creates the SSH user with the environment's public key.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    lxd = {
      source  = "terraform-lxd/lxd"
      version = "~> 2.0"
    }
  }
}

provider "lxd" {
  # The local LXD daemon, through its unix socket.
}

locals {
  # An instance name is a host name: at most 63 characters, not ending with '-'.
  instance_name = replace(substr("torrust-${var.environment}", 0, 63), "/-+$/", "")
  profile_name  = replace(substr("${var.lxd_profile}-${var.environment}", 0, 63), "/-+$/", "")

  # inputs.ssh.public_key is the path of a key file; the key itself is accepted too.
  ssh_public_key = trimspace(
    can(regex("^(ssh-|ecdsa-|sk-)", var.ssh_public_key))
    ? var.ssh_public_key
    : try(file(pathexpand(var.ssh_public_key)), "")
  )

  user_data = templatefile("${path.module}/cloud-init.yml.tftpl", {
    ssh_user       = var.ssh_user
    ssh_public_key = local.ssh_public_key
    ssh_port       = var.ssh_port
  })
}

resource "lxd_profile" "torrust" {
  name        = local.profile_name
  description = "Torrust Tracker instance of environment ${var.environment}"

  config = {
    "limits.cpu" = "2"
  }

  device {
    name = "root"
    type = "disk"
    properties = {
      path = "/"
      pool = "default"
      size = "10GiB"
    }
  }

  device {
    name = "eth0"
    type = "nic"
    properties = {
      network = "lxdbr0"
      name    = "eth0"
    }
  }
}

resource "lxd_instance" "torrust" {
  name     = local.instance_name
  image    = var.lxd_image
  type     = "virtual-machine"
  profiles = [lxd_profile.torrust.name]

  limits = {
    memory = var.lxd_memory
  }

  config = {
    "boot.autostart"       = "true"
    "security.secureboot"  = "false"
    "cloud-init.user-data" = local.user_data
  }

  # Provider 2.x waits for the VM's IPv4 address before the instance counts as
  # created (wait_for_network, true by default); the postcondition makes a VM
  # without an address an error rather than an empty instance_ip.
  lifecycle {
    precondition {
      condition     = can(regex("^(ssh-|ecdsa-|sk-)", local.ssh_public_key))
      error_message = "The lxd provider needs an SSH public key: set inputs.ssh.public_key to the path of an OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub)."
    }
    postcondition {
      condition     = self.ipv4_address != null && self.ipv4_address != ""
      error_message = "The virtual machine has no IPv4 address: check the lxdbr0 network (lxc network show lxdbr0) and the VM's console (lxc console NAME)."
    }
  }
}
