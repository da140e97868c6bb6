# Input variables of the instance. The `tofu` step writes their values to
# runner.auto.tfvars.json (the `vars` of the provision and destroy steps in
# machine.yaml). Every provider declares the same variables, used or not, so the
# engine never meets an undeclared one; a test keeps the three files identical.

variable "environment" {
  description = "Name of the runner environment; names the instance and its resources."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.environment))
    error_message = "The environment name must match ^[a-z][a-z0-9-]{0,62}$."
  }
}

variable "instance_dir" {
  description = "local provider: absolute path of the directory that is the instance (ignored by the other providers, whose instance directory is /opt/torrust)."
  type        = string
  default     = ""

  validation {
    condition = var.instance_dir == "" || (
      startswith(var.instance_dir, "/") &&
      trimsuffix(var.instance_dir, "/") != "" &&
      !can(regex("(^|/)\\.\\.?(/|$)", var.instance_dir))
    )
    error_message = "The instance directory (inputs.local.instance_dir) must be an absolute path without '.' or '..' parts, and not '/'."
  }
}

variable "boot_delay" {
  description = "local provider: seconds the instance takes to boot (a simulated boot)."
  type        = number
  default     = 0

  validation {
    condition     = var.boot_delay >= 0 && floor(var.boot_delay) == var.boot_delay
    error_message = "The boot delay (inputs.local.boot_delay) must be a whole number of seconds, 0 or more."
  }
}

variable "ssh_public_key" {
  description = "lxd and hetzner: the SSH public key installed for the instance's user, as the path of a public key file or as the key itself."
  type        = string
  default     = ""
}

variable "ssh_user" {
  description = "lxd and hetzner: the user cloud-init creates and Ansible connects as."
  type        = string
  default     = "torrust"
}

variable "ssh_port" {
  description = "lxd and hetzner: the port the instance's SSH server listens on."
  type        = number
  default     = 22
}

variable "tracker_udp_port" {
  description = "hetzner: the tracker's UDP port, opened in the cloud firewall."
  type        = number
  default     = 6969
}

variable "tracker_http_port" {
  description = "hetzner: the tracker's HTTP port, opened in the cloud firewall."
  type        = number
  default     = 7070
}

variable "tracker_api_port" {
  description = "hetzner: the tracker's API port, opened in the cloud firewall."
  type        = number
  default     = 1212
}

variable "lxd_image" {
  description = "lxd: the image of the virtual machine."
  type        = string
  default     = "ubuntu:24.04"
}

variable "lxd_profile" {
  description = "lxd: the name of the profile made for the virtual machine (suffixed with the environment name)."
  type        = string
  default     = "torrust-profile"
}

variable "lxd_memory" {
  description = "lxd: the memory limit of the virtual machine (e.g. 2GiB)."
  type        = string
  default     = "2GiB"
}

variable "hetzner_server_type" {
  description = "hetzner: the server type (e.g. cx22)."
  type        = string
  default     = "cx22"
}

variable "hetzner_location" {
  description = "hetzner: the location of the server (e.g. nbg1, fsn1, hel1)."
  type        = string
  default     = "nbg1"
}

variable "hetzner_image" {
  description = "hetzner: the operating system image of the server."
  type        = string
  default     = "ubuntu-24.04"
}
