# The `hetzner` provider: one Hetzner Cloud server, as the Torrust Tracker deployer
# makes it, with the environment's SSH key, a cloud firewall and cloud-init user-data
# that creates the SSH user.
#
# The API token is read by the hcloud provider from the HCLOUD_TOKEN environment
# variable; it is never written to these files, the variables or the state's inputs.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.47"
    }
  }
}

provider "hcloud" {
  # token: from the HCLOUD_TOKEN environment variable.
}

locals {
  name = replace(substr("torrust-${var.environment}", 0, 63), "/-+$/", "")

  labels = {
    "managed-by"  = "runner"
    "environment" = var.environment
  }

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

  # Inbound traffic the firewall lets in; everything else is dropped.
  inbound = {
    ssh          = { protocol = "tcp", port = var.ssh_port }
    tracker_udp  = { protocol = "udp", port = var.tracker_udp_port }
    tracker_http = { protocol = "tcp", port = var.tracker_http_port }
    tracker_api  = { protocol = "tcp", port = var.tracker_api_port }
  }
}

# The key is also given to root by Hetzner: a way in when cloud-init fails.
resource "hcloud_ssh_key" "torrust" {
  name       = local.name
  public_key = local.ssh_public_key
  labels     = local.labels

  lifecycle {
    precondition {
      condition     = can(regex("^(ssh-|ecdsa-|sk-)", local.ssh_public_key))
      error_message = "The hetzner provider needs an SSH public key: set inputs.ssh.public_key to the path of an OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub)."
    }
  }
}

resource "hcloud_firewall" "torrust" {
  name   = local.name
  labels = local.labels

  rule {
    description = "ping"
    direction   = "in"
    protocol    = "icmp"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }

  dynamic "rule" {
    for_each = local.inbound
    content {
      description = rule.key
      direction   = "in"
      protocol    = rule.value.protocol
      port        = tostring(rule.value.port)
      source_ips  = ["0.0.0.0/0", "::/0"]
    }
  }
}

resource "hcloud_server" "torrust" {
  name         = local.name
  server_type  = var.hetzner_server_type
  location     = var.hetzner_location
  image        = var.hetzner_image
  ssh_keys     = [hcloud_ssh_key.torrust.id]
  firewall_ids = [hcloud_firewall.torrust.id]
  user_data    = local.user_data
  labels       = local.labels

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }
}
